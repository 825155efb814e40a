"""Backpressure: refuse new jobs while the queue's backlog is over the configured limit."""

from __future__ import annotations

import threading
import time

from comfyserve.ports import JobQueue
from comfyserve.service.errors import Busy
from comfyserve.service.settings import ServiceSettings


class BacklogGate:
    """Reads the approximate depth at most once per ``backlog_cache_s``, so a burst costs one request."""

    def __init__(self, queue: JobQueue, settings: ServiceSettings) -> None:
        self._queue = queue
        self._settings = settings
        self._lock = threading.Lock()
        self._depth = 0
        self._read_at = float("-inf")

    def check(self) -> None:
        """Raise :class:`Busy` when queued + in-flight messages have reached ``max_backlog``."""
        limit = self._settings.max_backlog
        if limit is None:
            return
        depth = self._current_depth()
        if depth >= limit:
            raise Busy(
                "Too many jobs are waiting; retry later",
                retry_after=self._settings.retry_after_s,
                details=f"about {depth} jobs are queued or running, the limit is {limit}",
            )

    def _current_depth(self) -> int:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self._settings.backlog_cache_s:
                return self._depth
        depth = self._queue.approximate_depth().total
        with self._lock:
            self._depth, self._read_at = depth, now
        return depth
