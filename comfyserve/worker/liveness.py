"""The worker's liveness for the container's health check: ``<work dir>/alive``, touched whenever the loop shows
it moves (a receive returns, a heartbeat extends a message's visibility); ``comfyserve worker --health`` reads
its age. Light on purpose: the health check runs it every 30 s."""

from __future__ import annotations

import time

from comfyserve.settings import CloudWorkerSettings

ALIVE_FILE = "alive"


class Liveness:
    def __init__(self, settings: CloudWorkerSettings) -> None:
        self.path = settings.work_dir / ALIVE_FILE
        # Idle, a receive returns every receive_wait_s; busy, the heartbeat extends well within the visibility.
        self.window_s = 3 * max(settings.receive_wait_s, settings.visibility_timeout_s / 3, 10)

    def touch(self) -> None:
        self.path.touch()

    def healthy(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < self.window_s
        except OSError:
            return False
