"""The heartbeat: one background thread per worker that does the running job's round trips off the executor's
path — keeps its message invisible, writes its coalesced progress and polls for its cancellation."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from comfyserve.ports import EventBus, JobQueue, JobStore, ReceiptInvalid
from comfyserve.worker.monitor import JobMonitor, StopReason

log = logging.getLogger(__name__)


@dataclass
class _Watch:
    receipt: str
    monitor: JobMonitor
    extended_at: float


class Heartbeat:
    """Every ``tick_s`` the thread looks at the watched job: it extends the message's visibility to
    ``visibility_s`` once ``extend_every_s`` has passed since the last extension (a third of the visibility,
    so two beats may fail before it runs out), then lets the job's monitor sync with the store.

    When the queue no longer knows the receipt (the visibility ran out and another worker received the
    message), the job belongs to that worker: the monitor stops the run with :attr:`StopReason.LOST` and this
    worker writes nothing more. One thread per worker, started on the first watch.
    """

    def __init__(self, queue: JobQueue, store: JobStore, bus: EventBus, *, visibility_s: int, tick_s: float) -> None:
        self._queue = queue
        self._store = store
        self._bus = bus
        self._visibility_s = visibility_s
        self.extend_every_s = max(visibility_s / 3, 0.1)
        self._tick_s = min(tick_s, self.extend_every_s)
        self._lock = threading.Lock()  # held while a beat works on the watch, so a watch ends between beats
        self._watch: _Watch | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, receipt: str, monitor: JobMonitor) -> Iterator[None]:
        """Look after ``receipt`` and ``monitor`` until the block ends; no beat touches them afterwards."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()
        with self._lock:
            self._watch = _Watch(receipt, monitor, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                self._watch = None

    def forget(self) -> None:
        """Stop looking after the watched job now (its worker is about to exit and hands it back)."""
        with self._lock:
            self._watch = None

    def _run(self) -> None:  # a daemon thread: it lives as long as the worker process
        while True:
            time.sleep(self._tick_s)
            with self._lock:
                if self._watch is not None:
                    self._beat(self._watch)

    def _beat(self, watch: _Watch) -> None:
        now = time.monotonic()
        if now - watch.extended_at >= self.extend_every_s:
            try:
                self._queue.extend_visibility(watch.receipt, self._visibility_s)
                watch.extended_at = now
            except ReceiptInvalid:
                watch.monitor.stop(StopReason.LOST)
                return
            except Exception:  # transient: the next beat retries before the visibility runs out
                log.warning("visibility heartbeat failed", exc_info=True)
        if watch.monitor.stop_reason is None:
            try:
                watch.monitor.sync(self._store, self._bus)
            except Exception:
                log.warning("job sync failed", exc_info=True)
