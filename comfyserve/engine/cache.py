"""The output cache: node outputs and UI by input signature, kept across jobs in a warm process.

Least recently used entries go first once there are more than ``max_entries`` or their estimated size is over
``max_bytes``. Sizes are estimated without importing torch or numpy: anything with ``nbytes`` (or
``element_size()`` and ``nelement()``) counts its buffer, lists, tuples and dicts are walked, anything else
counts its shallow size. A tensor held by several entries (a pass-through node) is counted once.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

GIB = 1024**3
_SCALARS = (int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One node's outputs (a list of values per output slot) and its UI dict (``None`` when it has none)."""

    outputs: list[list[Any]]
    ui: dict[str, Any] | None


@dataclass(slots=True)
class _Slot:
    entry: CacheEntry
    own_bytes: int
    buffers: tuple[int, ...]


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


def measure(value: Any) -> tuple[int, dict[int, tuple[Any, int]]]:
    """``(bytes outside buffers, {id: (buffer object, bytes)})`` for a value, walked without recursion.

    Scalars and containers get CPython's typical sizes rather than ``sys.getsizeof`` calls: only buffers
    are large enough for the difference to matter, and this runs once per executed node.
    """
    own = 0
    buffers: dict[int, tuple[Any, int]] = {}
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bytes:
            own += 49 + len(item)
        elif kind in _SCALARS:
            own += 28
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

    def __init__(self, max_entries: int = 512, max_bytes: int = 8 * GIB) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._buffers: dict[int, list[Any]] = {}  # id -> [object, references, bytes]
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> CacheEntry | None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                return None
            self._slots.move_to_end(key)
            return slot.entry

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> bool:
        """Store an entry; returns False when it alone is larger than the cache (it is then not kept)."""
        own, buffers = measure((outputs, ui))
        with self._lock:
            if key in self._slots:
                self._remove(key)
            if self.max_entries < 1 or own + sum(size for _, size in buffers.values()) > self.max_bytes:
                return False
            for ident, (obj, size) in buffers.items():
                record = self._buffers.get(ident)
                if record is None:
                    self._buffers[ident] = [obj, 1, size]
                    self._bytes += size
                else:
                    record[1] += 1
            self._bytes += own
            self._slots[key] = _Slot(CacheEntry(outputs, ui), own, tuple(buffers))
            while len(self._slots) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(self._slots)))
            return True

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
            self._buffers.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Estimated bytes held, each shared buffer counted once."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    def _remove(self, key: str) -> None:
        slot = self._slots.pop(key)
        self._bytes -= slot.own_bytes
        for ident in slot.buffers:
            record = self._buffers[ident]
            record[1] -= 1
            if record[1] == 0:
                del self._buffers[ident]
                self._bytes -= record[2]
