"""One line per job state change for ``comfyserve serve``'s console, read from the data directory's event log
(``events.jsonl``, where the service and every worker publish :class:`~comfyserve.contracts.events.JobEvent`).

:class:`EventTail` reads the lines appended since it last looked (a torn last line waits for the next look);
:func:`describe` words one event; :class:`JobLog` prints them from a daemon thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from comfyserve.contracts.events import JobEvent, JobEventType

POLL_S = 0.5
MAX_MESSAGE = 200

WORDS = {
    JobEventType.JOB_QUEUED: "queued",
    JobEventType.JOB_STARTED: "started",
    JobEventType.JOB_SUCCEEDED: "succeeded",
    JobEventType.JOB_FAILED: "failed",
    JobEventType.JOB_CANCELLED: "cancelled",
}


class EventTail:
    """The events appended to ``path`` after this tail was made."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def poll(self) -> list[JobEvent]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        events = []
        for line in complete.splitlines():
            try:
                events.append(JobEvent.model_validate_json(line))
            except ValidationError:
                continue
        return events


def describe(event: JobEvent) -> str | None:
    """``job <id> (tenant <t>) <state>``, with the error for a failure; None for progress."""
    word = WORDS.get(event.type)
    if word is None:
        return None
    line = f"{event.time:%H:%M:%S} job {event.job_id} (tenant {event.tenant}) {word}"
    if event.error is not None:
        message = " ".join(event.error.message.split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        line += f": {event.error.type}: {message}"
    return line


class JobLog:
    """Prints :func:`describe` of each new event until stopped."""

    def __init__(self, path: Path, emit: Callable[[str], None]) -> None:
        self._tail = EventTail(path)
        self._emit = emit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfyserve-job-log", daemon=True)

    def start(self) -> JobLog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self._print()  # what the workers published while draining

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            self._print()

    def _print(self) -> None:
        for event in self._tail.poll():
            line = describe(event)
            if line is not None:
                self._emit(line)
