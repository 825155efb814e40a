"""A hard deadline for a process whose job may never yield: node code stuck in a loop of its own ignores
cancellation, so a worker told to stop arms this and is gone within the grace period whatever the job does.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
# How long past its drain window a worker told to stop may take before the hard deadline ends it.
EXIT_MARGIN_S = 5.0


def exit_after(
    seconds: float,
    code: int = 1,
    *,
    before_exit: Callable[[], None] | None = None,
    _exit: Callable[[int], None] = os._exit,
) -> threading.Timer:
    """End the process with ``code`` (no cleanup, as SIGKILL would, but ``before_exit`` first: the worker hands
    its job back) unless the returned timer is cancelled within ``seconds``. Call it on a drain request; a clean
    shutdown cancels it."""

    def expire() -> None:
        log.error("still running %.0f s after being told to stop; exiting now", seconds)
        if before_exit is not None:
            try:
                before_exit()
            except Exception:
                log.exception("could not hand the job back before exiting")
        logging.shutdown()
        _exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.name = "comfyserve-hard-deadline"
    timer.start()
    return timer
