"""Loaded model files kept between jobs, keyed by what is on disk, under an LRU bound on host memory.

The key is ``(kind, resolved path, size, mtime_ns)``: loading the same unchanged file again returns the very
same objects without reading it; a file changed on disk has another key and is loaded afresh (the stale entry
is dropped). ``ModelFileCache.get_or_load`` is thread-safe; concurrent loads of one file load it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from comfyserve.models.device import policy
from comfyserve.models.memory import release

T = TypeVar("T")
FileKey = tuple[str, str, int, int]


def file_key(kind: str, path: Path) -> FileKey:
    resolved = path.resolve()
    stat = resolved.stat()
    return (kind, str(resolved), stat.st_size, stat.st_mtime_ns)


@dataclass
class _Entry:
    value: Any
    size: int


class ModelFileCache:
    def __init__(self, budget_bytes: int, on_evict: Callable[[Any], None] = lambda _: None) -> None:
        self.budget_bytes = budget_bytes
        self.loads = 0
        self._entries: OrderedDict[FileKey, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._on_evict = on_evict

    def get_or_load(self, kind: str, path: Path, load: Callable[[Path], tuple[T, int]]) -> T:
        """The cached value for ``path``, or ``load(path) -> (value, size_in_bytes)`` once."""
        key = file_key(kind, path)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.value
            for stale in [k for k in self._entries if k[:2] == key[:2]]:
                self._drop(stale)
            value, size = load(path)
            self.loads += 1
            self._entries[key] = _Entry(value, size)
            self._evict(keep=key)
            return value

    def _drop(self, key: FileKey) -> None:
        self._on_evict(self._entries.pop(key).value)

    def _evict(self, keep: FileKey) -> None:
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.budget_bytes:
                break
            if key != keep:
                total -= self._entries[key].size
                self._drop(key)


_cache: ModelFileCache | None = None


def model_cache() -> ModelFileCache:
    """The process-wide cache, bounded by the host-memory budget of :func:`device.policy`."""
    global _cache
    if _cache is None:
        _cache = ModelFileCache(policy().ram_budget, on_evict=release)
    return _cache
