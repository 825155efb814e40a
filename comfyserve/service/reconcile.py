"""Dispatch: what turns a job record into a queued job, and the reconciler that finishes a dispatch a submit
left undone.

A submit writes twice, to two systems with no transaction between them: the record (created with
``dispatch_pending``), then the queue message. It then publishes ``Job Queued`` and clears ``dispatch_pending``.
A process that dies between those steps (or a bus that refuses the event) leaves the flag set, and the record
sits in the job store's index of undispatched jobs. The reconciler (a thread of ``comfyserve serve``; the
scheduled Lambda ``reconciler`` in the cloud) reads that index and, for each job older than the grace period,
sends the message again if the job is still ``queued``, publishes the owed ``Job Queued`` (stamped with the
job's creation time) and clears the flag.

Idempotent: a second message for a job is harmless, since the worker's claim is the conditional write
``queued → running`` and a message for a job that is not queued is deleted with no effect; a flag already
cleared is skipped; a ``Job Queued`` published twice has the same ``event_id`` both times. A job's
``Job Queued`` is thus published at least once, never dropped: the submit answers 202 once the message is on
the queue, whether the event went out then or is owed to the reconciler.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage, utc_now
from comfyserve.ports import EventBus, JobQueue, JobStore

log = logging.getLogger(__name__)

BATCH = 100
_QUEUED_EVENT_IDS = uuid.UUID("5f0d5a4e-7c1b-4d8e-9a3f-2b6c8e1d4a70")


def send_message(queue: JobQueue, record: JobRecord) -> str:
    """Enqueue the job's claim check; returns the message id."""
    return queue.send(QueueMessage(job_id=record.job_id, tenant=record.tenant, workflow_key=record.workflow_key))


def queued_event_id(job_id: str) -> str:
    """The ``Job Queued`` event's id: the same on every (re)publication, so subscribers can drop duplicates."""
    return uuid.uuid5(_QUEUED_EVENT_IDS, job_id).hex


def announce(jobs: JobStore, bus: EventBus, record: JobRecord, time: datetime | None = None) -> bool:
    """Publish the job's ``Job Queued`` event, then clear its ``dispatch_pending``. ``False`` when the bus
    refused the event: the flag stays set and the reconciler publishes it later."""
    event = JobEvent.from_record(JobEventType.JOB_QUEUED, record, time, queued_event_id(record.job_id))
    try:
        bus.publish(event)
    except Exception:
        log.warning(
            "%s for job %s was not published; the reconciler will publish it",
            JobEventType.JOB_QUEUED.value,
            record.job_id,
            exc_info=True,
        )
        return False
    try:
        jobs.mark_dispatched(record.job_id)
    except Exception:  # the event is out; at worst the reconciler publishes it a second time
        log.warning("could not clear dispatch_pending of job %s", record.job_id, exc_info=True)
    return True


@dataclass
class ReconcileReport:
    resent: list[str] = field(default_factory=list)  # jobs whose message was sent again
    announced: list[str] = field(default_factory=list)  # jobs whose Job Queued was published
    failed: list[str] = field(default_factory=list)  # jobs left for the next pass (queue or bus refused)


class Reconciler:
    def __init__(
        self,
        jobs: JobStore,
        queue: JobQueue,
        bus: EventBus,
        *,
        grace_s: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._bus = bus
        self._grace = timedelta(seconds=grace_s)
        self._clock = clock

    def run(self, max_batches: int = 10) -> ReconcileReport:
        """Dispatch every job left undispatched for longer than the grace period (up to ``max_batches``
        batches of :data:`BATCH`; the next run takes the rest)."""
        report = ReconcileReport()
        for _ in range(max_batches):
            batch = self._jobs.undispatched(self._clock() - self._grace, BATCH)
            for stale in batch:
                self._dispatch(stale.job_id, report)
            if len(batch) < BATCH or report.failed:
                break
        return report

    def _dispatch(self, job_id: str, report: ReconcileReport) -> None:
        record = self._jobs.get_by_id(job_id)  # the index may lag: act on the record as it is now
        if record is None or not record.dispatch_pending:
            return
        if record.status is JobStatus.QUEUED:
            try:
                send_message(self._queue, record)
            except Exception:
                log.warning("could not enqueue job %s; the next pass retries", job_id, exc_info=True)
                report.failed.append(job_id)
                return
            log.warning("job %s was left without its queue message; sent it", job_id)
            report.resent.append(job_id)
        if announce(self._jobs, self._bus, record, record.created_at):
            report.announced.append(job_id)
        else:
            report.failed.append(job_id)
