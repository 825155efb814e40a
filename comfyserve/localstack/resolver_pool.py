"""Route tables for concurrent requests: one resolver instance per request being resolved.

A Powertools resolver holds the request it resolves (its event and ``context``), so two threads must not share
one. The pool builds instances lazily, up to one per resolving thread, and lends each to one request at a time;
an instance costs about 25 ms to build and a few hundred kB, against a lock that made every request wait for
the slowest (docs/PERFORMANCE.md, edge under abuse).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Resolver(Protocol):
    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...


class ResolverPool:
    def __init__(self, build: Callable[[], Resolver]) -> None:
        self._build = build
        self._idle: queue.SimpleQueue[Resolver] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.built = 0

    @contextmanager
    def lend(self) -> Iterator[Resolver]:
        """An instance no other request is using (a new one when all are lent)."""
        try:
            resolver = self._idle.get_nowait()
        except queue.Empty:
            with self._lock:
                self.built += 1
            resolver = self._build()
        try:
            yield resolver
        finally:
            self._idle.put(resolver)

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        with self.lend() as resolver:
            return resolver.resolve(event, context)
