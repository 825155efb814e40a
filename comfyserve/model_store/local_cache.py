"""The instance NVMe tier: copies of EFS files under a byte budget, least recently used evicted first.

One cache object owns its directory (one worker per instance, or one directory per worker). Files are
copied to a temporary name and renamed, so a path in the cache is always a complete copy. A file is pinned
while a loader reads it and eviction skips pinned files; a file some other process still has open survives
eviction anyway (unlinking never takes an open file away on Linux). The LRU order survives restarts: a hit
sets the file's access time (not its mtime: that is part of the loaded-model cache's key), and the index is
rebuilt from the directory in access-time order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from comfyserve.model_store.copying import copy_file

log = logging.getLogger(__name__)


class LocalCache:
    def __init__(self, root: Path, budget_bytes: int, owner: str = "nvme") -> None:
        self.root = root
        self.budget_bytes = budget_bytes
        self.owner = f"{owner}-{os.getpid()}"
        self._sizes: OrderedDict[str, int] = OrderedDict()  # relative path -> bytes, least recent first
        self._pins: dict[str, int] = {}
        self._lock = threading.Lock()
        self.evictions = 0
        root.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        found = []
        for path in self.root.rglob("*"):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".part"):
                path.unlink()  # a copy a previous process did not finish
                continue
            stat = path.stat()
            found.append((stat.st_atime_ns, path.relative_to(self.root).as_posix(), stat.st_size))
        for _, relative, size in sorted(found):
            self._sizes[relative] = size

    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def cached(self) -> list[str]:
        """Relative paths held, least recently used first."""
        with self._lock:
            return list(self._sizes)

    @contextlib.contextmanager
    def pinned(self, relative: str) -> Iterator[None]:
        """Eviction leaves ``relative`` alone inside the block."""
        with self._lock:
            self._pins[relative] = self._pins.get(relative, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._pins[relative] -= 1
                if not self._pins[relative]:
                    del self._pins[relative]

    def lookup(self, relative: str, size: int) -> Path | None:
        """The cached copy of ``relative`` if it has ``size`` bytes (a wrong-sized copy is dropped)."""
        path = self.root / relative
        with self._lock:
            if relative not in self._sizes:
                return None
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                actual = -1
            if actual != size:
                self._remove(relative)
                return None
            self._sizes.move_to_end(relative)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))  # mtime is part of the RAM cache key
        return path

    def admit(self, relative: str, source: Path, size: int) -> Path | None:
        """Copy ``source`` in as ``relative``, evicting least recently used files to fit; ``None`` (and no
        copy) when it cannot fit the budget beside the pinned files. Call while ``relative`` is pinned."""
        with self._lock:
            if not self._make_room(relative, size):
                return None
            self._sizes[relative] = size  # reserved while the copy runs
        try:
            copy_file(source, self.root / relative, f"{self.owner}-{threading.get_ident()}")
        except BaseException:
            with self._lock:
                self._sizes.pop(relative, None)
            raise
        return self.root / relative

    def discard(self, relative: str) -> None:
        with self._lock:
            self._remove(relative)

    def _make_room(self, relative: str, size: int) -> bool:
        others = {k: v for k, v in self._sizes.items() if k != relative}
        total = sum(others.values()) + size
        if total <= self.budget_bytes:
            return True
        victims = []
        for key, bytes_ in others.items():
            if total <= self.budget_bytes:
                break
            if key not in self._pins:
                victims.append(key)
                total -= bytes_
        if total > self.budget_bytes:
            return False
        for key in victims:
            log.info("nvme cache: evicting %s (%d bytes)", key, self._sizes[key])
            self._remove(key)
            self.evictions += 1
        return True

    def _remove(self, relative: str) -> None:
        self._sizes.pop(relative, None)
        path = self.root / relative
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        for parent in path.parents:  # the empty version folders it leaves
            if parent == self.root:
                break
            try:
                parent.rmdir()
            except OSError:
                break
