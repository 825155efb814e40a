"""The worker loop: receive a job message, claim the job, run it, publish its results, acknowledge.

At-least-once delivery, exactly-once effects:

* the claim is the conditional write ``queued → running``; a message for a job that is finished, or running
  under a live worker (a duplicate send), is deleted with no effect;
* a message delivered again (``receive_count > 1``) for a ``running`` job means its worker lost it (crash,
  expired visibility): the job is put back ``running → queued`` and claimed again;
* outputs go to deterministic keys (a re-run overwrites the same objects) and ``manifest.json`` last;
* while a job runs a heartbeat keeps its message invisible; if the heartbeat finds the receipt gone, another
  worker owns the job and this one stops without writing anything more.

On :meth:`Worker.request_drain` (SIGTERM) the loop stops receiving; the running job may finish within
``drain_timeout_s``, after which it is interrupted, put back to ``queued`` and its message released.
"""

from __future__ import annotations

import enum
import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus, OutputRef, Progress, Timings, utc_now
from comfyserve.engine.executor import ExecutionResult, Executor
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validation import Limits
from comfyserve.ports import (
    BlobStore,
    EventBus,
    JobQueue,
    JobStore,
    PortError,
    ReceivedMessage,
    TransitionConflict,
)
from comfyserve.service.models import ComfyUIMeta
from comfyserve.worker.heartbeat import Heartbeat
from comfyserve.worker.inputs import InputError, fetch_inputs, load_extra_data, load_workflow
from comfyserve.worker.monitor import EventSink, JobMonitor, StopReason
from comfyserve.worker.outputs import local_outputs, upload_outputs, write_manifest
from comfyserve.worker.run_local import LocalRun, WorkflowInvalid, run_workflow

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
    models: ModelInventory = field(default_factory=ModelInventory)
    limits: Limits = field(default_factory=Limits)
    visibility_timeout_s: int = 60
    receive_wait_s: int = 1
    progress_interval_s: float = 0.5
    cancel_poll_s: float = 0.5
    drain_timeout_s: float = 20.0
    allow_private_urls: bool = False

    @property
    def heartbeat_interval_s(self) -> float:
        return max(self.visibility_timeout_s / 3, 0.1)


class PromptMessages(Protocol):
    """ComfyUI's websocket messages for one job: the executor's events, then the end of the prompt."""

    def __call__(self, event: str, data: dict[str, Any]) -> None: ...

    def finish(self, record: JobRecord) -> None:
        """Called once the job's final state is written (not when it is released or lost)."""
        ...


MessagesFactory = Callable[[JobRecord], PromptMessages | None]


@dataclass
class _Run:
    """What one attempt produced; ``error`` is set when it failed before or outside the executor."""

    result: ExecutionResult | None = None
    manifest: dict[str, Any] | None = None
    error: JobError | None = None
    execution_s: float = 0.0


class Worker:
    def __init__(
        self,
        ports: WorkerPorts,
        registry: NodeRegistry,
        executor: Executor,
        settings: WorkerSettings,
        *,
        messages: MessagesFactory | None = None,
        cold_start_s: float = 0.0,
    ) -> None:
        self.ports = ports
        self.registry = registry
        self.executor = executor
        self.settings = settings
        self._messages = messages
        self._cold_start_s: float | None = cold_start_s
        self._drain_deadline: float | None = None
        self._heartbeat = Heartbeat(ports.queue, settings.visibility_timeout_s, settings.heartbeat_interval_s)
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
        while not self.draining:
            try:
                self.poll()
            except Exception:
                log.exception("processing a message failed; it will be delivered again")

    def poll(self) -> list[Outcome]:
        """Receive at most one message (waiting up to ``receive_wait_s``) and process it."""
        try:
            received = self.ports.queue.receive(1, self.settings.visibility_timeout_s, self.settings.receive_wait_s)
        except PortError:
            log.warning("receive failed", exc_info=True)
            time.sleep(self.settings.receive_wait_s)
            return []
        return [self.process(message) for message in received]

    def process(self, received: ReceivedMessage) -> Outcome:
        queue = self.ports.queue
        try:
            message = received.message()
        except ValidationError:
            log.error("deleting a message that is not a job message: %.200s", received.body)
            queue.delete(received.receipt)
            return Outcome.SKIPPED
        record = self.ports.store.get_by_id(message.job_id)
        claimed = self._claim(record, received) if record is not None else None
        if claimed is None:
            queue.delete(received.receipt)
            return Outcome.SKIPPED
        self._publish(JobEventType.JOB_STARTED, claimed)
        with self._heartbeat.watch(received.receipt) as lost:
            outcome = self._run_claimed(claimed, lambda: StopReason.LOST if lost() else self._drain_expired())
        if outcome is Outcome.RELEASED:
            queue.release(received.receipt)
        elif outcome is not Outcome.LOST:
            queue.delete(received.receipt)
        return outcome

    # -- claiming ------------------------------------------------------------------------------------------

    def _claim(self, record: JobRecord, received: ReceivedMessage) -> JobRecord | None:
        """``queued → running`` (after ``running → queued`` for a job whose worker lost it), or ``None``."""
        store = self.ports.store
        try:
            if record.status is JobStatus.RUNNING and received.receive_count > 1:
                log.info(
                    "job %s: reclaiming from a worker that lost it (receive %d)",
                    record.job_id,
                    received.receive_count,
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

    # -- running -------------------------------------------------------------------------------------------

    def _drain_expired(self) -> StopReason | None:
        deadline = self._drain_deadline
        return StopReason.DRAIN if deadline is not None and time.monotonic() > deadline else None

    def _run_claimed(self, record: JobRecord, external_stop: Callable[[], StopReason | None]) -> Outcome:
        job_dir = self.settings.work_dir / f"{record.job_id}.{record.attempts}"
        messages = self._messages(record) if self._messages is not None else None
        try:
            run, monitor = self._execute(record, job_dir, external_stop, messages)
            outcome, final = self._finish(record, run, monitor)
        finally:
            self._cleanup.submit(shutil.rmtree, job_dir, ignore_errors=True)
        if messages is not None and final is not None:
            messages.finish(final)
        return outcome

    def _execute(
        self,
        record: JobRecord,
        job_dir: Path,
        external_stop: Callable[[], StopReason | None],
        forward: EventSink | None,
    ) -> tuple[_Run, JobMonitor | None]:
        run = _Run()
        meta = ComfyUIMeta.of(record.metadata)
        try:
            prompt = load_workflow(record, self.ports.blobs)
            extra_pnginfo = load_extra_data(meta, self.ports.blobs).get("extra_pnginfo")
            files = fetch_inputs(
                record.inputs,
                self.ports.blobs,
                job_dir / "input",
                allow_private_urls=self.settings.allow_private_urls,
            )
        except InputError as exc:
            run.error = JobError(type="input_error", message=str(exc))
            return run, None
        settings = self.settings
        monitor = JobMonitor(
            record,
            self.ports.store,
            self.ports.bus,
            nodes_total=len(prompt),
            progress_interval_s=settings.progress_interval_s,
            cancel_poll_s=settings.cancel_poll_s,
            external_stop=external_stop,
            forward=forward,
        )
        local = LocalRun(
            out_dir=job_dir / "out",
            models=settings.models,
            inputs=files,
            input_dir=job_dir / "input",
            limits=settings.limits,
            targets=meta.targets,
            cancel_check=monitor.cancel_check,
        )
        started = time.perf_counter()
        try:
            run.result, run.manifest = run_workflow(
                prompt,
                local,
                self.registry,
                self.executor,
                prompt_id=record.job_id,
                extra_pnginfo=extra_pnginfo if isinstance(extra_pnginfo, dict) else None,
                on_event=monitor.on_event,
            )
        except WorkflowInvalid as exc:
            run.error = _invalid_error(exc)
        except Exception as exc:
            log.exception("job %s: the run raised", record.job_id)
            run.error = JobError(type="internal_error", message=f"{type(exc).__name__}: {exc}")
        run.execution_s = time.perf_counter() - started
        return run, monitor

    # -- finishing -----------------------------------------------------------------------------------------

    def _finish(self, record: JobRecord, run: _Run, monitor: JobMonitor | None) -> tuple[Outcome, JobRecord | None]:
        """Write the job's final state; returns the outcome and the final record (``None`` if not written)."""
        stop = monitor.stop_reason if monitor is not None else None
        succeeded = run.result is not None and run.result.status == "success"
        if stop is StopReason.LOST:
            return Outcome.LOST, None
        store, job_id = self.ports.store, record.job_id
        timings = self._timings(record, run)
        try:
            if not succeeded and stop is StopReason.DRAIN:
                store.transition(job_id, {JobStatus.RUNNING}, JobStatus.QUEUED, timings=timings)
                return Outcome.RELEASED, None
            if not succeeded and stop is StopReason.CANCELLED:
                final = store.transition(
                    job_id, {JobStatus.RUNNING}, JobStatus.CANCELLED, finished_at=utc_now(), timings=timings
                )
                self._publish(JobEventType.JOB_CANCELLED, final)
                return Outcome.CANCELLED, final
            return self._complete(record, run, stop, timings, monitor)
        except TransitionConflict as exc:
            log.info("job %s changed under the worker (%s); leaving it as it is", job_id, exc)
            return Outcome.SKIPPED, store.get_by_id(job_id)

    def _complete(
        self,
        record: JobRecord,
        run: _Run,
        stop: StopReason | None,
        timings: Timings,
        monitor: JobMonitor | None,
    ) -> tuple[Outcome, JobRecord]:
        outputs: list[OutputRef] = []
        error = run.error
        if run.result is not None and run.result.status == "success" and run.manifest is not None:
            files = [item for item in local_outputs(run.manifest) if item.path.is_file()]
            outputs = upload_outputs(self.ports.blobs, record.tenant, record.job_id, files, record.output)
        elif error is None and stop is StopReason.TIMEOUT:
            error = JobError(type="timeout", message=f"the job ran longer than its timeout of {record.timeout_s} s")
        elif error is None:
            error = _execution_error(run.result)
        status = JobStatus.FAILED if error is not None else JobStatus.SUCCEEDED
        total = monitor.progress.nodes_total if monitor is not None else 0
        progress = Progress(nodes_done=total, nodes_total=total) if error is None else None
        write_manifest(
            self.ports.blobs,
            record.tenant,
            record.job_id,
            {
                "job_id": record.job_id,
                "tenant": record.tenant,
                "status": status.value,
                "outputs": [ref.model_dump(mode="json") for ref in outputs],
                "error": error.model_dump(mode="json") if error is not None else None,
                "timings": timings.model_dump(mode="json"),
                "executed": run.result.executed if run.result is not None else [],
                "cached": run.result.cached if run.result is not None else [],
            },
        )
        fields: dict[str, Any] = {
            "finished_at": utc_now(),
            "timings": timings,
            "outputs": outputs,
            "error": error,
        }
        if progress is not None:
            fields["progress"] = progress
        final = self.ports.store.transition(record.job_id, {JobStatus.RUNNING}, status, **fields)
        event = JobEventType.JOB_SUCCEEDED if error is None else JobEventType.JOB_FAILED
        self._publish(event, final)
        return (Outcome.SUCCEEDED if error is None else Outcome.FAILED), final

    def _timings(self, record: JobRecord, run: _Run) -> Timings:
        cold_start_s, self._cold_start_s = self._cold_start_s, None
        per_node = run.result.timings if run.result is not None else {}
        return Timings(
            queued_s=record.timings.queued_s,
            cold_start_s=round(cold_start_s or 0.0, 6),
            execution_s=round(run.execution_s, 6),
            per_node={node: round(seconds, 6) for node, seconds in per_node.items()},
        )

    def _publish(self, event_type: JobEventType, record: JobRecord) -> None:
        try:
            self.ports.bus.publish(JobEvent.from_record(event_type, record))
        except PortError:
            log.warning("%s not published for job %s", event_type.value, record.job_id, exc_info=True)


def _invalid_error(exc: WorkflowInvalid) -> JobError:
    error = exc.result.error or {}
    first: tuple[str, dict[str, Any]] | None = next(iter(exc.result.node_errors.items()), None)
    return JobError(
        type=str(error.get("type", "invalid_prompt")),
        message=str(exc),
        node_id=first[0] if first else None,
        node_type=first[1].get("class_type") if first else None,
    )


def _execution_error(result: ExecutionResult | None) -> JobError:
    details: dict[str, Any] = result.errors[0] if result is not None and result.errors else {}
    return JobError(
        type=str(details.get("exception_type") or "execution_error"),
        message=str(details.get("exception_message") or "the workflow did not complete").strip(),
        node_id=details.get("node_id"),
        node_type=details.get("node_type"),
    )
