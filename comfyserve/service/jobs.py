"""Reading and cancelling a tenant's jobs. Another tenant's job is indistinguishable from a missing one."""

from __future__ import annotations

import logging
import re

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JOB_ID_PATTERN, JobRecord, JobStatus
from comfyserve.ports import InvalidCursor, TransitionConflict
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)

_job_id = re.compile(JOB_ID_PATTERN)
CANCEL_ATTEMPTS = 4
PAGE_LIMIT = 100  # the most jobs one listing returns


def get_job(deps: ServiceDeps, tenant: str, job_id: str) -> JobRecord:
    record = deps.jobs.get(tenant, job_id) if _job_id.match(job_id) else None
    if record is None:
        raise NotFound("Job not found", type_="job_not_found", details=f"no job {job_id!r}")
    return record


def list_jobs(
    deps: ServiceDeps, tenant: str, *, status: JobStatus | None, limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    try:
        return deps.jobs.list(tenant, status=status, limit=limit, cursor=cursor)
    except InvalidCursor:
        raise Invalid("Invalid cursor", type_="invalid_cursor", details="pass a cursor from a previous page") from None


def cancel_job(deps: ServiceDeps, tenant: str, job_id: str) -> JobRecord:
    """A queued job becomes ``cancelled`` (it never runs); a running one gets ``cancel_requested`` (its
    worker interrupts it); a finished one is a :class:`Conflict`. A race with the worker is retried."""
    record = get_job(deps, tenant, job_id)
    for _ in range(CANCEL_ATTEMPTS):
        try:
            if record.status is JobStatus.QUEUED:
                return cancel_queued(deps, record)
            if record.status is JobStatus.RUNNING:
                return request_interrupt(deps, record)
        except TransitionConflict:
            record = get_job(deps, tenant, job_id)
            continue
        raise Conflict(
            "Job already finished",
            type_="job_finished",
            details=f"job {job_id} is {record.status.value}; there is nothing to cancel",
            extra_info={"status": record.status.value},
        )
    raise Conflict("Job is changing state; retry", type_="cancel_race", details=f"job {job_id}")


def cancel_queued(deps: ServiceDeps, record: JobRecord) -> JobRecord:
    """queued → cancelled, then ``JobCancelled``; :class:`TransitionConflict` if no longer queued."""
    cancelled = deps.jobs.transition(record.job_id, {JobStatus.QUEUED}, JobStatus.CANCELLED, finished_at=deps.clock())
    publish(deps, JobEventType.JOB_CANCELLED, cancelled)
    return cancelled


def request_interrupt(deps: ServiceDeps, record: JobRecord) -> JobRecord:
    """Flag a running job for its worker to interrupt; :class:`TransitionConflict` if it is not running."""
    if record.cancel_requested:
        return record
    return deps.jobs.set_fields(record.job_id, when_status={JobStatus.RUNNING}, cancel_requested=True)


def publish(deps: ServiceDeps, event_type: JobEventType, record: JobRecord) -> None:
    """Publish an event for a change already committed; a failure is logged, not raised."""
    try:
        deps.events.publish(JobEvent.from_record(event_type, record, deps.clock()))
    except Exception:
        log.exception("%s for job %s was not published", event_type.value, record.job_id)
