"""ComfyUI's native job API (its newer releases): ``GET /api/jobs``, ``GET /api/jobs/{id}``,
``POST /api/jobs/{id}/cancel`` and ``POST /api/jobs/cancel``, in ComfyUI's shapes, per tenant.

A job is ``pending``, ``in_progress``, ``completed``, ``failed`` or ``cancelled``; times are epoch
milliseconds. A cancel is idempotent: a finished or unknown id is a 200 with nothing done, except in a batch,
where any unknown id refuses the whole batch (404) before anything is cancelled."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Literal

from comfyserve.contracts.comfyui import prompt_id_of
from comfyserve.contracts.jobs import JobRecord, JobStatus
from comfyserve.ports import TransitionConflict
from comfyserve.service.comfyui import HISTORY_LIMIT, records_of, scan
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import NotFound
from comfyserve.service.history import epoch_ms, history_entry, load_extra_data, load_prompt, prompt_number
from comfyserve.service.jobs import cancel_queued, request_interrupt

STATUS = {
    JobStatus.QUEUED: "pending",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
STATUSES = tuple(STATUS.values())
SortBy = Literal["created_at", "execution_duration"]


def job_summary(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    """One job as ``GET /api/jobs`` lists it (absent fields are left out, as ComfyUI prunes them)."""
    job: dict[str, Any] = {
        "id": prompt_id_of(record),
        "status": STATUS[record.status],
        "priority": prompt_number(record),
        "create_time": epoch_ms(record.created_at),
        "execution_start_time": epoch_ms(record.started_at),
        "execution_end_time": epoch_ms(record.finished_at) if record.status.is_terminal else None,
        "outputs_count": len(record.outputs),
    }
    if record.status is JobStatus.FAILED:
        entry = history_entry(deps, record)
        job["execution_error"] = entry["status"]["messages"][-1][1]
    if record.outputs:
        outputs = history_entry(deps, record)["outputs"]
        node_id, media = next((node, media) for node, media in outputs.items() if media.get("images"))
        job["preview_output"] = {**media["images"][0], "nodeId": node_id, "mediaType": "images"}
    return {name: value for name, value in job.items() if value is not None}


def job_detail(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    """``GET /api/jobs/{id}``: the summary, and for a finished job its outputs, status and workflow."""
    job = job_summary(deps, record)
    if record.status.is_terminal:
        entry = history_entry(deps, record)
        job["outputs"] = entry["outputs"]
        job["execution_status"] = entry["status"]
        job["workflow"] = {"prompt": load_prompt(deps, record), "extra_data": load_extra_data(deps, record)}
    return job


def _duration(record: JobRecord) -> float:
    if record.started_at is None or record.finished_at is None:
        return 0.0
    return (record.finished_at - record.started_at).total_seconds()


def list_jobs(
    deps: ServiceDeps,
    tenant: str,
    statuses: list[str],
    sort_by: SortBy,
    descending: bool,
    limit: int | None,
    offset: int,
) -> dict[str, Any]:
    """A window over the tenant's last ``HISTORY_LIMIT`` jobs, with ComfyUI's pagination block."""
    wanted = {status for status, name in STATUS.items() if name in statuses}
    recent = itertools.islice(scan(deps, tenant, None, HISTORY_LIMIT), HISTORY_LIMIT)
    records = [record for record in recent if record.status in wanted]
    if sort_by == "execution_duration":
        records.sort(key=_duration, reverse=descending)
    else:
        records.sort(key=lambda record: record.created_at, reverse=descending)
    window = records[offset:] if limit is None else records[offset : offset + limit]
    total = len(records)
    pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(window) < total}
    return {"jobs": [job_summary(deps, record) for record in window], "pagination": pagination}


def get_job(deps: ServiceDeps, tenant: str, job_id: str) -> dict[str, Any]:
    for record in records_of(deps, tenant, [job_id]):
        return job_detail(deps, record)
    raise NotFound("Job not found", type_="job_not_found", details=f"no job {job_id!r}")


def cancel_record(deps: ServiceDeps, record: JobRecord) -> JobRecord:
    """Dequeue a queued job or flag a running one for interruption; a finished job stays as it is."""
    with contextlib.suppress(TransitionConflict):
        if record.status is JobStatus.QUEUED:
            return cancel_queued(deps, record)
        if record.status is JobStatus.RUNNING:
            return request_interrupt(deps, record)
    return deps.jobs.get(record.tenant, record.job_id) or record


def cancel(deps: ServiceDeps, tenant: str, job_id: str) -> dict[str, Any]:
    """Dequeue a pending job or interrupt a running one; ``{"id", "status"}`` after it (``unknown`` ids too)."""
    for record in records_of(deps, tenant, [job_id]):
        return {"id": job_id, "status": STATUS[cancel_record(deps, record).status]}
    return {"id": job_id, "status": "unknown"}


def cancel_many(deps: ServiceDeps, tenant: str, job_ids: list[str]) -> dict[str, Any]:
    records = list(records_of(deps, tenant, job_ids))
    unknown = sorted(set(job_ids) - {prompt_id_of(record) for record in records})
    if unknown:
        raise NotFound("Job not found", type_="job_not_found", details=f"no job {unknown[0]!r}; nothing was cancelled")
    return {
        "jobs": [
            {"id": prompt_id_of(record), "status": STATUS[cancel_record(deps, record).status]} for record in records
        ]
    }
