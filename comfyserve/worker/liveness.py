"""The worker's liveness for the container's health check: ``<work dir>/alive``, touched whenever the loop shows
it moves (a receive returns, a heartbeat extends a message's visibility); ``comfyserve worker --health`` reads
its age. Light on purpose: the health check runs it every 30 s."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from comfyserve.settings import CloudWorkerSettings

if TYPE_CHECKING:  # the health check imports this module: it stays light
    from comfyserve.contracts.jobs import QueueMessage
    from comfyserve.ports import JobQueue, QueueDepth, ReceivedMessage

ALIVE_FILE = "alive"


class Liveness:
    def __init__(self, settings: CloudWorkerSettings) -> None:
        self.path = settings.work_dir / ALIVE_FILE
        # Idle, a receive returns every receive_wait_s; busy, the heartbeat extends well within the visibility.
        self.window_s = 3 * max(settings.receive_wait_s, settings.visibility_timeout_s / 3, 10)

    def touch(self) -> None:
        self.path.touch()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Alive while the block runs: the cold start (a ComfyUI start, model copies, the warm-up) may outlast the
        window, and ECS judges a task at most 300 s after it starts."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.window_s / 3):
                self.touch()

        self.touch()
        thread = threading.Thread(target=beat, name="liveness", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def healthy(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < self.window_s
        except OSError:
            return False


class LivenessQueue:
    """The job queue, touching the liveness file on every receive and visibility extension."""

    def __init__(self, queue: JobQueue, liveness: Liveness) -> None:
        self._queue, self._liveness = queue, liveness

    def send(self, message: QueueMessage) -> str:
        return self._queue.send(message)

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        received = self._queue.receive(max_messages, visibility_timeout_s, wait_s)
        self._liveness.touch()
        return received

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        self._queue.extend_visibility(receipt, seconds)
        self._liveness.touch()

    def delete(self, receipt: str) -> None:
        self._queue.delete(receipt)

    def release(self, receipt: str) -> None:
        self._queue.release(receipt)

    def approximate_depth(self) -> QueueDepth:
        return self._queue.approximate_depth()

    @property
    def dead_letters(self) -> JobQueue | None:
        return self._queue.dead_letters
