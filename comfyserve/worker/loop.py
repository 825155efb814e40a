"""The worker loop: receive a job message, claim the job, run it on the backend, write its manifest, acknowledge.

At-least-once delivery, exactly-once effects:

* the claim is the conditional write ``queued → running``; a message for a job that is finished, or running
  under a live worker (a duplicate send), is deleted with no effect;
* a message delivered again (``receive_count > 1``) for a ``running`` job means its worker lost it (crash,
  expired visibility): if that worker got as far as the manifest, the job is completed from it; otherwise the
  job is put back ``running → queued`` and claimed again;
* outputs go to deterministic keys (a re-run overwrites the same objects) and ``manifest.json`` last. The
  manifest is the worker's last word on the job: the completion use case (``comfyserve.service.completion``),
  reached by the manifest's "object created" signal, writes the terminal state and publishes the event;
* while a job runs, the heartbeat thread keeps its message invisible, writes its progress and polls for its
  cancellation (the backend's callbacks only touch memory); if the receipt is gone, another worker owns the
  job and this one stops without writing anything more;
* the worker holds scale-in protection from a claim until a receive comes back empty.

On :meth:`Worker.request_drain` (SIGTERM) the loop stops receiving; the running job may finish within
``drain_timeout_s``, after which it is interrupted, put back to ``queued`` (``running → queued``, the one
state write that is the worker's own) and its message released at once. A job that does not yield (a long
native call) is handed back the same way by :meth:`Worker.abandon`, from the hard deadline, just before the
process exits.
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from comfyserve.contracts.comfyui import ComfyUIMeta
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus, OutputRef, Progress, Timings, utc_now
from comfyserve.contracts.manifest import JobManifest, ManifestStatus, manifest_key
from comfyserve.model_store.tiers import seconds_by_tier
from comfyserve.ports import (
    BlobStore,
    EventBus,
    JobQueue,
    JobStore,
    PortError,
    ReceivedMessage,
    TransitionConflict,
)
from comfyserve.service.completion import Completed, Completion
from comfyserve.worker.backend import Backend, BackendJob, BackendRestarted, BackendResult
from comfyserve.worker.ecs_protection import MAX_EXPIRY_MINUTES
from comfyserve.worker.heartbeat import Heartbeat
from comfyserve.worker.inputs import InputError, fetch_inputs, load_extra_data, load_workflow
from comfyserve.worker.monitor import EventSink, JobMonitor, StopReason
from comfyserve.worker.outputs import upload_outputs, write_manifest
from comfyserve.worker.protection import NoProtection, ScaleInProtection
from comfyserve.worker.telemetry import WorkerTelemetry

log = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RELEASED = "released"  # drained: back to queued, message visible again
    LOST = "lost"  # another worker owns the job now
    SKIPPED = "skipped"  # nothing to do: finished, claimed elsewhere, unknown job or foreign message


@dataclass(frozen=True)
class WorkerPorts:
    blobs: BlobStore
    queue: JobQueue
    store: JobStore
    bus: EventBus


@dataclass(frozen=True)
class WorkerSettings:
    work_dir: Path
    visibility_timeout_s: int = 120
    receive_wait_s: int = 20  # SQS long polling; the local stack waits less
    progress_interval_s: float = 1.0
    cancel_poll_s: float = 2.0
    drain_timeout_s: float = 90.0
    job_timeout_s: int | None = None  # cap on a job's own timeout_s (None: no cap)
    protection_margin_s: int = 120
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def timeout_for(self, record: JobRecord) -> int | None:
        """The job's effective timeout: its own ``timeout_s`` capped at ``job_timeout_s`` (None: unbounded)."""
        return min((s for s in (record.timeout_s, self.job_timeout_s) if s is not None), default=None)

    @property
    def tick_s(self) -> float:
        """How often the heartbeat thread looks at the running job."""
        return max(min(0.25, self.progress_interval_s / 2, self.cancel_poll_s / 2), 0.01)


class PromptMessages(Protocol):
    """ComfyUI's websocket messages for one job: the executor's events, then the end of the prompt."""

    def __call__(self, event: str, data: dict[str, Any]) -> None: ...

    def finish(self, record: JobRecord) -> None:
        """Called once the job's final state is written (not when it is released or lost)."""
        ...


MessagesFactory = Callable[[JobRecord], PromptMessages | None]

OUTCOMES: dict[ManifestStatus, Outcome] = {
    "succeeded": Outcome.SUCCEEDED,
    "failed": Outcome.FAILED,
    "cancelled": Outcome.CANCELLED,
}


class Worker:
    def __init__(
        self,
        ports: WorkerPorts,
        backend: Backend,
        settings: WorkerSettings,
        *,
        protection: ScaleInProtection | None = None,
        telemetry: WorkerTelemetry | None = None,
        messages: MessagesFactory | None = None,
        cold_start_s: float = 0.0,
    ) -> None:
        self.ports = ports
        self.backend = backend
        self.settings = settings
        self.completion = Completion(ports.store, ports.bus, ports.blobs)
        self._protection = protection or NoProtection()
        self._protected = False
        self._telemetry = telemetry or WorkerTelemetry()
        self._messages = messages
        self._cold_start_s: float | None = cold_start_s
        self._drain_deadline: float | None = None
        self._held: tuple[str, str] | None = None  # (job id, receipt) of the claimed job in progress
        self._started = False
        self._heartbeat = Heartbeat(
            ports.queue,
            ports.store,
            ports.bus,
            visibility_s=settings.visibility_timeout_s,
            tick_s=settings.tick_s,
        )
        # Scratch folders are removed off the job's path (directory removal is slow on some disks).
        self._cleanup = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scratch-cleanup")

    # -- the loop ------------------------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._drain_deadline is not None

    def request_drain(self) -> None:
        """Stop receiving; the job in progress gets ``drain_timeout_s`` to finish (safe from a signal handler)."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.settings.drain_timeout_s

    def run(self) -> None:
        """Receive and process until drained. A message whose processing raised stays in flight and comes back
        after its visibility timeout, so the loop logs the error and carries on."""
        try:
            while not self.draining:
                try:
                    self.poll()
                except Exception:
                    log.exception("processing a message failed; it will be delivered again")
        finally:
            self._release_protection()

    def poll(self) -> list[Outcome]:
        """Receive at most one message (waiting up to ``receive_wait_s``) and process it."""
        if not self._started:
            self.backend.start()
            self._started = True
        settings = self.settings
        try:
            received = self.ports.queue.receive(1, settings.visibility_timeout_s, settings.receive_wait_s)
        except PortError:
            log.warning("receive failed", exc_info=True)
            time.sleep(settings.receive_wait_s)
            return []
        if not received:
            self._release_protection()
        return [self.process(message) for message in received]

    def process(self, received: ReceivedMessage) -> Outcome:
        queue = self.ports.queue
        if self.draining:  # received during the last long poll: let another worker have it now
            queue.release(received.receipt)
            return Outcome.SKIPPED
        try:
            message = received.message()
        except ValidationError:
            log.error("deleting a message that is not a job message: %.200s", received.body)
            queue.delete(received.receipt)
            return Outcome.SKIPPED
        record = self.ports.store.get_by_id(message.job_id)
        claimed = None
        if record is not None and not self._completed_earlier(record, received):
            claimed = self._claim(record, received)
        if claimed is None:
            queue.delete(received.receipt)
            return Outcome.SKIPPED
        self._protect(claimed)
        self._held = (claimed.job_id, received.receipt)
        try:
            with self._telemetry.job(claimed):
                log.info("job claimed (receive %d)", received.receive_count)
                self._publish(JobEventType.JOB_STARTED, claimed)
                self._telemetry.claimed(claimed.timings.queued_s)
                outcome = self._run_claimed(claimed, received)
                log.info("job %s", outcome.value)
            if outcome is Outcome.RELEASED:
                queue.release(received.receipt)
            elif outcome is not Outcome.LOST:
                queue.delete(received.receipt)
        finally:
            self._held = None
        return outcome

    def abandon(self) -> None:
        """Hand the job in progress back before the process exits without finishing it (the drain's hard
        deadline): ``running → queued`` and its message visible again now, not when its visibility runs out."""
        held = self._held
        if held is None:
            return
        job_id, receipt = held
        self._heartbeat.forget()  # no beat may hide the message again
        try:
            self.ports.store.transition(job_id, {JobStatus.RUNNING}, JobStatus.QUEUED)
        except TransitionConflict as exc:
            log.info("job changed under the exiting worker (%s)", exc)
        self.ports.queue.release(receipt)
        log.warning("job %s put back in the queue: the worker exits before it finished", job_id)

    # -- claiming ------------------------------------------------------------------------------------------

    def _completed_earlier(self, record: JobRecord, received: ReceivedMessage) -> bool:
        """A worker wrote this job's manifest and then crashed before its message was deleted: complete the job
        from it (the completion use case is idempotent) instead of running it again."""
        pending = record.status.is_terminal and record.final_event == "pending"
        lost = record.status is JobStatus.RUNNING and received.receive_count > 1
        key = manifest_key(record.tenant, record.job_id)
        if not pending and not (lost and self.ports.blobs.head(key) is not None):
            return False
        return self.completion.on_object_created(key) is not Completed.IGNORED

    def _claim(self, record: JobRecord, received: ReceivedMessage) -> JobRecord | None:
        """``queued → running`` (after ``running → queued`` for a job whose worker lost it), or ``None``."""
        store = self.ports.store
        try:
            if record.status is JobStatus.RUNNING and received.receive_count > 1:
                log.info(
                    "reclaiming job %s from a worker that lost it (receive %d)", record.job_id, received.receive_count
                )
                record = store.transition(record.job_id, {JobStatus.RUNNING}, JobStatus.QUEUED)
            if record.status is not JobStatus.QUEUED:
                return None
            if record.cancel_requested:
                cancelled = store.transition(
                    record.job_id, {JobStatus.QUEUED}, JobStatus.CANCELLED, finished_at=utc_now()
                )
                self._publish(JobEventType.JOB_CANCELLED, cancelled)
                return None
            started = utc_now()
            queued_s = round((started - record.created_at).total_seconds(), 6)
            return store.transition(
                record.job_id,
                {JobStatus.QUEUED},
                JobStatus.RUNNING,
                started_at=started,
                attempts=record.attempts + 1,
                progress=Progress(),
                timings=Timings(queued_s=queued_s),
            )
        except TransitionConflict:
            return None

    def _protect(self, record: JobRecord) -> None:
        timeout_s = self.settings.timeout_for(record)
        expires_in_s = timeout_s if timeout_s is not None else MAX_EXPIRY_MINUTES * 60
        self._protection.protect(expires_in_s + self.settings.protection_margin_s)
        self._protected = True

    def _release_protection(self) -> None:
        if self._protected:
            self._protection.release()
            self._protected = False

    # -- running -------------------------------------------------------------------------------------------

    def _drain_expired(self) -> StopReason | None:
        deadline = self._drain_deadline
        return StopReason.DRAIN if deadline is not None and time.monotonic() > deadline else None

    def _run_claimed(self, record: JobRecord, received: ReceivedMessage) -> Outcome:
        job_dir = self.settings.work_dir / f"{record.job_id}.{record.attempts}"
        messages = self._messages(record) if self._messages is not None else None
        try:
            outcome, manifest = self._attempt(record, received, job_dir, messages)
        finally:
            self._cleanup.submit(shutil.rmtree, job_dir, ignore_errors=True)
        self._telemetry.finished(outcome.value, manifest.timings if manifest else None, self._cold_start_once())
        if messages is not None and manifest is not None:
            final = self.ports.store.get_by_id(record.job_id)
            if final is not None and final.status.is_terminal:
                messages.finish(final)
        return outcome

    def _attempt(
        self, record: JobRecord, received: ReceivedMessage, job_dir: Path, forward: EventSink | None
    ) -> tuple[Outcome, JobManifest | None]:
        meta = ComfyUIMeta.of(record.metadata)
        try:
            prompt = load_workflow(record, self.ports.blobs)
            extra_pnginfo = load_extra_data(meta, self.ports.blobs).get("extra_pnginfo")
        except InputError as exc:
            failed = BackendResult(status="error", error=JobError(type="input_error", message=str(exc)))
            return self._conclude(record, failed, None, 0.0)
        monitor = JobMonitor(
            record,
            nodes_total=len(prompt),
            timeout_s=self.settings.timeout_for(record),
            progress_interval_s=self.settings.progress_interval_s,
            cancel_poll_s=self.settings.cancel_poll_s,
            external_stop=self._drain_expired,
            forward=forward,
        )
        with self._heartbeat.watch(received.receipt, monitor):  # until the manifest is written
            started = time.perf_counter()
            result = self._execute(record, prompt, extra_pnginfo, meta, job_dir, monitor)
            execution_s = time.perf_counter() - started
            monitor.run_ended()
            for load in result.model_loads:
                self._telemetry.model_load(load.tier.value, load.seconds)
            return self._conclude(record, result, monitor, execution_s)

    def _execute(
        self,
        record: JobRecord,
        prompt: dict[str, Any],
        extra_pnginfo: Any,
        meta: ComfyUIMeta,
        job_dir: Path,
        monitor: JobMonitor,
    ) -> BackendResult:
        try:
            files = fetch_inputs(record.inputs, self.ports.blobs, job_dir / "input")
        except InputError as exc:
            return BackendResult(status="error", error=JobError(type="input_error", message=str(exc)))
        job = BackendJob(
            job_id=record.job_id,
            prompt=prompt,
            work_dir=job_dir,
            inputs=files,
            extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
            targets=meta.targets,
            cancel_check=monitor.cancel_check,
            on_event=monitor.on_event,
        )
        try:
            return self.backend.run(job)
        except BackendRestarted as exc:
            log.warning("the backend restarted under the job, which is released: %s", exc)
            monitor.stop(StopReason.RESTARTED)
            return BackendResult(status="interrupted")
        except Exception as exc:
            log.exception("the run raised")
            return BackendResult(
                status="error", error=JobError(type="internal_error", message=f"{type(exc).__name__}: {exc}")
            )

    # -- concluding ----------------------------------------------------------------------------------------

    def _conclude(
        self, record: JobRecord, result: BackendResult, monitor: JobMonitor | None, execution_s: float
    ) -> tuple[Outcome, JobManifest | None]:
        """Release the job, or write its manifest (outputs first); returns the outcome and the manifest."""
        stop = monitor.stop_reason if monitor is not None else None
        succeeded = result.status == "success"
        if stop is StopReason.LOST:
            return Outcome.LOST, None
        timings = self._timings(record, result, execution_s)
        if not succeeded and stop in (StopReason.DRAIN, StopReason.RESTARTED):
            try:
                self.ports.store.transition(record.job_id, {JobStatus.RUNNING}, JobStatus.QUEUED, timings=timings)
            except TransitionConflict as exc:
                log.info("job changed under the draining worker (%s)", exc)
            else:
                log.warning("job %s put back in the queue: the worker stopped before it finished", record.job_id)
            return Outcome.RELEASED, None
        status: ManifestStatus = "succeeded"
        outputs: list[OutputRef] = []
        error: JobError | None = None
        if succeeded:
            outputs = upload_outputs(self.ports.blobs, record.tenant, record.job_id, result.outputs, record.output)
        elif stop is StopReason.CANCELLED:
            status = "cancelled"
        elif result.error is None and stop is StopReason.TIMEOUT and monitor is not None:
            status = "failed"
            error = JobError(type="timeout", message=f"the job ran longer than its timeout of {monitor.timeout_s} s")
        else:
            status = "failed"
            error = result.error or JobError(type="execution_error", message="the workflow did not complete")
        if monitor is not None and monitor.stop_reason is StopReason.LOST:  # lost while uploading
            return Outcome.LOST, None
        manifest = JobManifest(
            job_id=record.job_id,
            tenant=record.tenant,
            status=status,
            outputs=outputs,
            ui=result.ui if succeeded else {},
            error=error,
            timings=timings,
            cold_start=timings.cold_start_s is not None,
            cache_hits=result.cached,
            executed=result.executed,
            nodes_total=monitor.progress.nodes_total if monitor is not None else 0,
            worker_id=self.settings.worker_id,
            backend=self.backend.name,
            attempt=record.attempts,
        )
        write_manifest(self.ports.blobs, manifest)
        return OUTCOMES[status], manifest

    def _cold_start_once(self) -> float | None:
        cold_start_s, self._cold_start_s = self._cold_start_s, None
        return cold_start_s

    def _timings(self, record: JobRecord, result: BackendResult, execution_s: float) -> Timings:
        cold_start_s = self._cold_start_s
        return Timings(
            queued_s=record.timings.queued_s,
            cold_start_s=round(cold_start_s, 6) if cold_start_s is not None else None,
            execution_s=round(execution_s, 6),
            per_node={node: round(seconds, 6) for node, seconds in result.per_node_s.items()},
            model_load_s=seconds_by_tier(result.model_loads),
        )

    def _publish(self, event_type: JobEventType, record: JobRecord) -> None:
        try:
            self.ports.bus.publish(JobEvent.from_record(event_type, record))
        except PortError:
            log.warning("%s not published for job %s", event_type.value, record.job_id, exc_info=True)
