"""Watching one running job.

The executor's callbacks (:meth:`JobMonitor.on_event`, :meth:`JobMonitor.cancel_check`) only read and write
memory. The store and the bus are spoken to from the heartbeat thread (:meth:`JobMonitor.sync`), coalesced:
at most one progress write (with its ``JobProgress`` event) per ``progress_interval_s``, and a cancellation
poll only when no progress write has read the record for ``cancel_poll_s``. A short job costs the store
nothing extra: the first write and the first poll come only once it has run that long.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, Progress
from comfyserve.ports import EventBus, JobStore, PortError, TransitionConflict

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], None]


class StopReason(enum.Enum):
    CANCELLED = "cancelled"  # the client cancelled the job
    TIMEOUT = "timeout"  # the job ran past its effective timeout (its timeout_s, capped by the worker)
    DRAIN = "drain"  # the worker is shutting down and its grace period ran out
    LOST = "lost"  # the message's visibility ran out: another worker owns the job now
    RESTARTED = "restarted"  # the backend died under the job and was restarted: the job is released, run again


class JobMonitor:
    def __init__(
        self,
        record: JobRecord,
        *,
        nodes_total: int,
        timeout_s: int | None,
        progress_interval_s: float,
        cancel_poll_s: float,
        external_stop: Callable[[], StopReason | None],
        forward: EventSink | None = None,
    ) -> None:
        self._record = record
        self._progress_interval_s = progress_interval_s
        self._cancel_poll_s = cancel_poll_s
        self._external_stop = external_stop
        self._forward = forward
        self._lock = threading.Lock()  # progress is written by the executor's thread, read by the heartbeat's
        now = time.monotonic()
        self._last_write = now
        self._last_read = now
        self._written: Progress | None = None
        self.timeout_s = timeout_s  # the job's effective timeout (None: unbounded)
        self._deadline = now + timeout_s if timeout_s else None
        self.progress = Progress(nodes_total=nodes_total)
        self.stop_reason: StopReason | None = None
        self._ended = False

    # -- the executor's callbacks (memory only) -----------------------------------------------------------

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        """Track progress and forward ComfyUI's messages."""
        if event == "executing" and data.get("node") is None:
            return  # the end-of-prompt ``executing`` is sent once the job's final state is written
        with self._lock:
            self._track(event, data)
        if self._forward is not None:
            self._forward(event, data)

    def _track(self, event: str, data: dict[str, Any]) -> None:
        progress = self.progress
        if event == "execution_cached":
            done = min(progress.nodes_done + len(data.get("nodes", [])), progress.nodes_total)
            self.progress = progress.model_copy(update={"nodes_done": done})
        elif event == "executing":
            done = progress.nodes_done + (progress.node is not None)
            update = {"node": str(data["node"]), "step": 0, "max": 0, "nodes_done": min(done, progress.nodes_total)}
            self.progress = progress.model_copy(update=update)
        elif event == "progress":
            self.progress = progress.model_copy(update={"step": int(data["value"]), "max": int(data["max"])})

    def cancel_check(self) -> bool:
        """The executor's cancellation probe (between nodes and on every progress step)."""
        if self.stop_reason is None:
            self.stop_reason = self._external_stop()
        if self.stop_reason is None and self._deadline is not None and time.monotonic() > self._deadline:
            self.stop_reason = StopReason.TIMEOUT
        return self.stop_reason is not None

    def stop(self, reason: StopReason) -> None:
        self.stop_reason = self.stop_reason or reason

    def run_ended(self) -> None:
        """The backend returned: no more progress writes or cancellation polls (the heartbeat still keeps the
        message invisible while the outputs and the manifest are written)."""
        self._ended = True

    # -- the heartbeat thread ------------------------------------------------------------------------------

    def sync(self, store: JobStore, bus: EventBus) -> None:
        """Write progress if it changed and is due, else poll for cancellation if due."""
        if self._ended:
            return
        now = time.monotonic()
        with self._lock:
            progress = self.progress
        if progress != self._written and now - self._last_write >= self._progress_interval_s:
            self._write_progress(store, bus, progress, now)
        elif now - self._last_read >= self._cancel_poll_s:
            self._last_read = now
            try:
                self._observe(store.get_by_id(self._record.job_id))
            except Exception:  # a failed read must not fail the job: the next beat asks again
                log.warning("cancellation poll failed", exc_info=True)

    def _write_progress(self, store: JobStore, bus: EventBus, progress: Progress, now: float) -> None:
        self._last_write = self._last_read = now
        self._written = progress
        try:
            record = store.update_progress(self._record.job_id, progress)
        except TransitionConflict:
            self.stop(StopReason.CANCELLED)
            return
        except PortError:
            log.warning("progress update failed", exc_info=True)
            return
        self._observe(record)
        try:
            bus.publish(JobEvent.from_record(JobEventType.JOB_PROGRESS, record))
        except PortError:
            log.warning("JobProgress not published", exc_info=True)

    def _observe(self, record: JobRecord | None) -> None:
        if record is None or record.cancel_requested or record.status is not JobStatus.RUNNING:
            self.stop(StopReason.CANCELLED)
