"""The output cache: node outputs and UI by input signature, kept across jobs in a warm process.

Least recently used entries go first once there are more than ``max_entries`` or their estimated size is over
``max_bytes``. Sizes are estimated without importing torch or numpy: anything with ``nbytes`` (or
``element_size()`` and ``nelement()``) counts its buffer, lists, tuples and dicts are walked, anything else
counts its shallow size. A tensor held by several entries (a pass-through node) is counted once.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

GIB = 1024**3
DEFAULT_ENTRIES = 512
DEFAULT_BYTES = 8 * GIB
K = TypeVar("K")
_SCALARS = (int, float, bool, type(None))
_SCALAR_BYTES = 28  # CPython's size of a small int or a float; only buffers need to be counted precisely


class CacheEntry(NamedTuple):
    """One node's outputs (a list of values per output slot) and its UI dict (``None`` when it has none);
    ``own_bytes`` and ``buffers`` are the cache's accounting."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None
    own_bytes: int = 0
    buffers: tuple[int, ...] = ()


_new_entry = functools.partial(tuple.__new__, CacheEntry)  # skips NamedTuple's Python-level __new__


def buffer_bytes(value: Any) -> int | None:
    """The size of a tensor-like value's data, by duck typing; ``None`` for anything else."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    element_size = getattr(value, "element_size", None)
    nelement = getattr(value, "nelement", None)
    if callable(element_size) and callable(nelement):
        size = element_size() * nelement()
        return size if isinstance(size, int) else None
    return None


def measure(outputs: list[list[Any]], ui: dict[str, Any] | None) -> tuple[int, dict[int, tuple[Any, int]]]:
    """``(bytes outside buffers, {id: (buffer object, bytes)})`` of an entry, walked without recursion.

    Scalars and containers get CPython's typical sizes instead of ``sys.getsizeof`` calls: this runs once per
    executed node, and only buffers are large enough for precision to matter.
    """
    own = 56 + 8 * len(outputs)
    stack: list[Any] = []
    for values in outputs:
        own += 56 + 8 * len(values)
        for value in values:
            if type(value) in _SCALARS:
                own += _SCALAR_BYTES
            else:
                stack.append(value)
    buffers: dict[int, tuple[Any, int]] = {}
    if ui is not None:
        stack.append(ui)
    if not stack:
        return own, buffers
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            own += _SCALAR_BYTES
        elif kind is str or kind is bytes:
            own += 49 + len(item)
        elif id(item) in seen:
            continue
        elif kind is list or kind is tuple:
            seen.add(id(item))
            own += 56 + 8 * len(item)
            stack.extend(item)
        elif kind is dict:
            seen.add(id(item))
            own += 64 + 40 * len(item)
            stack.extend(item.values())
        else:
            seen.add(id(item))
            size = buffer_bytes(item)
            if size is None:
                own += sys.getsizeof(item)
            else:
                buffers[id(item)] = (item, size)
    return own, buffers


class OutputCache:
    """LRU by entry count and estimated bytes; safe to share between threads."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._buffers: dict[int, list[Any]] = {}  # id -> [object, references, bytes]
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def get_many(self, keys: Mapping[K, str | None]) -> dict[K, CacheEntry]:
        """The entries found for ``{name: key}`` (``None`` keys skipped), in one pass under the lock."""
        found: dict[K, CacheEntry] = {}
        with self._lock:
            get = self._entries.get
            move_to_end = self._entries.move_to_end
            for name, key in keys.items():
                if key is not None and (entry := get(key)) is not None:
                    move_to_end(key)
                    found[name] = entry
        return found

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> bool:
        """Store an entry; returns False when it alone is larger than the cache (it is then not kept)."""
        own, buffers = measure(outputs, ui)
        size = own + sum(size for _, size in buffers.values()) if buffers else own
        if self.max_entries < 1 or size > self.max_bytes:
            return False
        with self._lock:
            entries = self._entries
            if key in entries:
                self._remove(key)
            for ident, (obj, size) in buffers.items():
                record = self._buffers.get(ident)
                if record is None:
                    self._buffers[ident] = [obj, 1, size]
                    self._bytes += size
                else:
                    record[1] += 1
            self._bytes += own
            entries[key] = _new_entry((outputs, ui, own, tuple(buffers) if buffers else ()))
            while len(entries) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(entries)))
            return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._buffers.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Estimated bytes held, each shared buffer counted once."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.own_bytes
        for ident in entry.buffers:
            record = self._buffers[ident]
            record[1] -= 1
            if record[1] == 0:
                del self._buffers[ident]
                self._bytes -= record[2]


@dataclass(frozen=True)
class CachePolicy:
    """ComfyUI's cache options, offered by both backends: the default, ``--cache-lru N`` (keep at most N node
    results, least recently used first out) or ``--cache-none`` (keep nothing: every node runs every time).

    The default is each backend's own: ComfyUI's classic cache (the previous prompt's results) on the ComfyUI
    backend, an LRU of :data:`DEFAULT_ENTRIES` results bounded by :data:`DEFAULT_BYTES` on the built-in one."""

    lru: int | None = None
    none: bool = False

    def __post_init__(self) -> None:
        if self.lru is not None and self.none:
            raise ValueError("--cache-lru and --cache-none exclude each other")
        if self.lru is not None and self.lru < 1:
            raise ValueError(f"--cache-lru needs a number of node results of at least 1, got {self.lru}")

    @property
    def max_entries(self) -> int:
        """The built-in output cache's bound on entries."""
        return 0 if self.none else self.lru or DEFAULT_ENTRIES

    def comfyui_args(self) -> tuple[str, ...]:
        if self.none:
            return ("--cache-none",)
        return ("--cache-lru", str(self.lru)) if self.lru is not None else ()
