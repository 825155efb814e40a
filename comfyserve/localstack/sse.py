"""The local server's live Comfy API v2 event stream, built from the route table's snapshots.

The route answers a job's current state as server-sent events and ends (what API Gateway's buffered Lambda
integration can carry). Locally the server keeps the response open instead: it asks the route again every
``poll_s``, sends the frames it has not sent yet (a new status, new progress), comments to keep an idle
connection open, and ends after the frames of a finished job or after ``max_s``.
"""

from __future__ import annotations

import re

EVENTS_PATH = re.compile(r"^(?:/api)?/v2/jobs/[^/]+/events$")
_TERMINAL = re.compile(rb'^event: status\ndata: \{"status":"(?:succeeded|failed|canceled|expired)"', re.M)
KEEPALIVE = b": keep-alive\n\n"
POLL_S = 0.5
MAX_S = 600.0
KEEPALIVE_S = 15.0


def frames(body: bytes) -> list[bytes]:
    """The events of a snapshot, each with its blank-line terminator."""
    return [frame + b"\n\n" for frame in body.split(b"\n\n") if frame.strip()]


def is_terminal(body: bytes) -> bool:
    """Whether a snapshot is the last one: it carries a finished job's status."""
    return _TERMINAL.search(body) is not None


class FrameFilter:
    """Passes each distinct frame once: a status or progress that did not change is not sent again."""

    def __init__(self) -> None:
        self._sent: set[bytes] = set()

    def new(self, body: bytes) -> bytes:
        fresh = [frame for frame in frames(body) if frame not in self._sent]
        self._sent.update(fresh)
        return b"".join(fresh)
