"""Completion: the one use case that turns a job's manifest into its terminal state and its terminal event.

The worker's last act for a finished job is writing ``outputs/{tenant}/{job_id}/manifest.json``. Its "object
created" signal (S3 → EventBridge → Lambda ``completion`` in the cloud; the local blob store's listener in
the worker processes of ``comfyserve serve``) reaches :meth:`Completion.complete_key`, here, on both sides.

Single writer. For a job that ran, this is the only code that writes ``running → succeeded | failed |
cancelled`` (with the manifest's outputs, error and timings) and the only code that publishes the terminal
event. The write is conditional, so a duplicated or reordered signal (at-least-once delivery; two attempts of
one job that both wrote their manifest) finds the job terminal and changes nothing.

Exactly one event. The terminal write also sets ``final_event = "pending"``; the event is then published with
a deterministic ``event_id`` and ``final_event`` becomes ``"published"``. A crash between the two writes is
recovered by the next delivery of the signal (EventBridge and Lambda retry a failed invocation; locally the
worker's redelivered message calls this use case again): a terminal job still ``pending`` gets its event
published then. A crash after the publish but before the flag write may publish the event a second time,
with the same ``event_id``, which subscribers use to drop duplicates.

The other edges are not completions and keep their own writers: ``running → queued`` (a draining worker
releases the job it cannot finish; not terminal, no manifest) is the worker's; ``queued → cancelled`` (the
API cancels a job no worker holds, or a worker drops a queued job whose cancellation was requested) and
``queued → failed`` (the job's message could not be sent) are written by whoever decides them and publish
their own event, since no manifest exists for a job that never ran. A running job is cancelled through its
worker (``cancel_requested``), which writes a ``cancelled`` manifest, so it completes here too. All writes are
conditional on the current status, so these writers never overwrite one another.
"""

from __future__ import annotations

import enum
import logging
import uuid

from pydantic import ValidationError

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import TERMINAL_STATUSES, JobRecord, JobStatus, Progress
from comfyserve.contracts.manifest import JobManifest, parse_manifest_key
from comfyserve.ports import BlobNotFound, BlobStore, EventBus, JobNotFound, JobStore, TransitionConflict

log = logging.getLogger(__name__)

TERMINAL_EVENTS = {
    JobStatus.SUCCEEDED: JobEventType.JOB_SUCCEEDED,
    JobStatus.FAILED: JobEventType.JOB_FAILED,
    JobStatus.CANCELLED: JobEventType.JOB_CANCELLED,
}
_EVENT_IDS = uuid.UUID("5b0f6f0e-3c1d-4a55-9a57-0c7d1f3e2a10")


class Completed(enum.StrEnum):
    COMPLETED = "completed"  # terminal state written and event published
    RECOVERED = "recovered"  # the terminal state was written earlier; its owed event was published now
    DUPLICATE = "duplicate"  # nothing to do: completed and published before
    IGNORED = "ignored"  # not a manifest, no such job, or the job is not running (e.g. released to the queue)


def final_event_id(job_id: str) -> str:
    """The terminal event's id: the same on every (re)publication, so subscribers can drop duplicates."""
    return uuid.uuid5(_EVENT_IDS, job_id).hex


class Completion:
    def __init__(self, store: JobStore, bus: EventBus, blobs: BlobStore) -> None:
        self._store = store
        self._bus = bus
        self._blobs = blobs

    def on_object_created(self, key: str) -> Completed:
        """The "object created" signal: manifests complete their job, every other key is ignored."""
        parsed = parse_manifest_key(key)
        if parsed is None:
            return Completed.IGNORED
        try:
            manifest = JobManifest.model_validate_json(self._blobs.get(key))
        except BlobNotFound:
            log.warning("manifest %s is gone; nothing to complete", key)
            return Completed.IGNORED
        except ValidationError as exc:
            log.error("manifest %s is not a job manifest: %s", key, exc)
            return Completed.IGNORED
        if (manifest.tenant, manifest.job_id) != parsed:
            log.error("manifest %s names job %s of tenant %s", key, manifest.job_id, manifest.tenant)
            return Completed.IGNORED
        return self.complete(manifest)

    def complete(self, manifest: JobManifest) -> Completed:
        """Write the terminal state of a running job from ``manifest`` and publish its event (the hot path is
        one conditional write, one publish and the flag write); anything else is a duplicate or a recovery."""
        try:
            record = self._write_terminal(manifest)
            outcome = Completed.COMPLETED
        except JobNotFound:
            log.warning("manifest for unknown job %s", manifest.job_id)
            return Completed.IGNORED
        except TransitionConflict:
            current = self._store.get_by_id(manifest.job_id)
            if current is None:
                return Completed.IGNORED
            record, outcome = current, Completed.RECOVERED
        if record.status not in TERMINAL_STATUSES or record.final_event is None:
            return Completed.IGNORED  # queued again (released), or ended by another writer that published itself
        if record.final_event == "published":
            return Completed.DUPLICATE
        self._publish(record)
        return outcome

    def _write_terminal(self, manifest: JobManifest) -> JobRecord:
        nodes = manifest.nodes_total
        progress = Progress(nodes_done=nodes, nodes_total=nodes) if manifest.status == "succeeded" else None
        fields = {"progress": progress} if progress is not None else {}
        return self._store.transition(
            manifest.job_id,
            {JobStatus.RUNNING},
            manifest.job_status,
            finished_at=manifest.written_at,
            outputs=manifest.outputs,
            ui=manifest.ui,
            error=manifest.error,
            timings=manifest.timings,
            final_event="pending",
            **fields,
        )

    def _publish(self, record: JobRecord) -> None:
        """Publish the terminal event (raises if the bus refuses: the signal's redelivery retries it)."""
        event = JobEvent.from_record(TERMINAL_EVENTS[record.status], record, time=record.finished_at)
        self._bus.publish(event.model_copy(update={"event_id": final_event_id(record.job_id)}))
        self._store.set_fields(record.job_id, when_status=TERMINAL_STATUSES, final_event="published")
