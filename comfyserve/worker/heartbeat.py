"""The visibility heartbeat: keeps a received message invisible for as long as its job runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from comfyserve.ports import JobQueue, ReceiptInvalid

log = logging.getLogger(__name__)


class Heartbeat:
    """One background thread per worker that extends the watched message's visibility to ``visibility_s``
    every ``interval_s`` (a thread per job would cost a thread start on every job).

    A watch yields a probe that turns true when the queue no longer knows the receipt (the visibility ran out
    and another worker received the message): the job then belongs to that worker and this one must stop
    without writing anything more.
    """

    def __init__(self, queue: JobQueue, visibility_s: int, interval_s: float) -> None:
        self._queue = queue
        self._visibility_s = visibility_s
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._receipt: str | None = None
        self._lost = False
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, receipt: str) -> Iterator[Callable[[], bool]]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="visibility-heartbeat", daemon=True)
            self._thread.start()
        with self._lock:
            self._receipt, self._lost = receipt, False
        try:
            yield lambda: self._lost
        finally:
            with self._lock:
                self._receipt = None

    def _run(self) -> None:  # a daemon thread: it lives as long as the worker process
        while True:
            time.sleep(self._interval_s)
            with self._lock:
                receipt = self._receipt
            if receipt is None:
                continue
            try:
                self._queue.extend_visibility(receipt, self._visibility_s)
            except ReceiptInvalid:
                with self._lock:
                    self._lost = self._lost or self._receipt == receipt
            except Exception:  # a transient queue error: the next beat retries before the visibility runs out
                log.warning("visibility heartbeat failed", exc_info=True)
