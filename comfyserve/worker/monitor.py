"""Watching one running job: throttled progress from executor events, and the executor's cancel check.

Short jobs cost the store nothing extra: the first progress write and the first cancellation poll happen
only once the job has run for ``progress_interval_s`` / ``cancel_poll_s``.
"""

from __future__ import annotations

import enum
import logging
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
    TIMEOUT = "timeout"  # the job ran past its timeout_s
    DRAIN = "drain"  # the worker is shutting down and its grace period ran out
    LOST = "lost"  # the message's visibility ran out: another worker owns the job now


class JobMonitor:
    def __init__(
        self,
        record: JobRecord,
        store: JobStore,
        bus: EventBus,
        *,
        nodes_total: int,
        progress_interval_s: float,
        cancel_poll_s: float,
        external_stop: Callable[[], StopReason | None],
        forward: EventSink | None = None,
    ) -> None:
        self._record = record
        self._store = store
        self._bus = bus
        self._progress_interval_s = progress_interval_s
        self._cancel_poll_s = cancel_poll_s
        self._external_stop = external_stop
        self._forward = forward
        now = time.monotonic()
        self._last_write = now
        self._last_poll = now
        self._deadline = now + record.timeout_s if record.timeout_s else None
        self.progress = Progress(nodes_total=nodes_total)
        self.stop_reason: StopReason | None = None

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        """The executor's ``on_event``: track progress, forward ComfyUI's messages, write progress when due."""
        if event == "executing" and data.get("node") is None:
            return  # the worker sends the end-of-prompt ``executing`` itself, after the job's final state
        self._track(event, data)
        if self._forward is not None:
            self._forward(event, data)
        if time.monotonic() - self._last_write >= self._progress_interval_s:
            self._write_progress()

    def _track(self, event: str, data: dict[str, Any]) -> None:
        progress = self.progress
        if event == "execution_cached":
            done = min(progress.nodes_done + len(data.get("nodes", [])), progress.nodes_total)
            self.progress = progress.model_copy(update={"nodes_done": done})
        elif event == "executing":
            done = progress.nodes_done + (progress.node is not None)
            update = {
                "node": str(data["node"]),
                "step": 0,
                "max": 0,
                "nodes_done": min(done, progress.nodes_total),
            }
            self.progress = progress.model_copy(update=update)
        elif event == "progress":
            self.progress = progress.model_copy(update={"step": int(data["value"]), "max": int(data["max"])})

    def _write_progress(self) -> None:
        self._last_write = time.monotonic()
        try:
            record = self._store.update_progress(self._record.job_id, self.progress)
        except TransitionConflict:
            self.stop_reason = self.stop_reason or StopReason.CANCELLED
            return
        except PortError:
            log.warning("progress update failed for job %s", self._record.job_id, exc_info=True)
            return
        self._observe(record)
        try:
            self._bus.publish(JobEvent.from_record(JobEventType.JOB_PROGRESS, record))
        except PortError:
            log.warning("JobProgress not published for job %s", self._record.job_id, exc_info=True)

    def _observe(self, record: JobRecord | None) -> None:
        if record is None or record.cancel_requested or record.status is not JobStatus.RUNNING:
            self.stop_reason = self.stop_reason or StopReason.CANCELLED

    def cancel_check(self) -> bool:
        """The executor's cancellation probe (called between nodes and on every progress step)."""
        if self.stop_reason is None:
            self.stop_reason = self._external_stop()
        now = time.monotonic()
        if self.stop_reason is None and self._deadline is not None and now > self._deadline:
            self.stop_reason = StopReason.TIMEOUT
        if self.stop_reason is None and now - self._last_poll >= self._cancel_poll_s:
            self._last_poll = now
            try:
                self._observe(self._store.get_by_id(self._record.job_id))
            except Exception:  # a failed read must not fail the job: the next probe asks again
                log.warning("cancellation poll failed for job %s", self._record.job_id, exc_info=True)
        return self.stop_reason is not None
