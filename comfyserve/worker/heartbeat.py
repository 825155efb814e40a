"""The visibility heartbeat: keeps a received message invisible for as long as its job runs."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from comfyserve.ports import JobQueue, ReceiptInvalid

log = logging.getLogger(__name__)


class Heartbeat:
    """Extends the message's visibility to ``visibility_s`` every ``interval_s`` on a background thread.

    ``lost`` turns true when the queue no longer knows the receipt (the visibility ran out and another
    worker received the message): the job now belongs to that worker and this one must stop without writing.
    """

    def __init__(self, queue: JobQueue, receipt: str, visibility_s: int, interval_s: float) -> None:
        self._queue = queue
        self._receipt = receipt
        self._visibility_s = visibility_s
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visibility-heartbeat", daemon=True)
        self.lost = False

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._queue.extend_visibility(self._receipt, self._visibility_s)
            except ReceiptInvalid:
                self.lost = True
                return
            except Exception:  # a transient queue error: the next beat retries before the visibility runs out
                log.warning("visibility heartbeat failed", exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
