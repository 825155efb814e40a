"""ComfyUI's own API over the job service: ``/prompt``, ``/queue``, ``/history``, ``/interrupt``
(reference §2), scoped to the caller's tenant as every other route is.

A ``prompt_id`` the client chooses is scoped to its tenant: the job is stored under an id derived from
tenant and prompt id (:func:`~comfyserve.service.history.stored_job_id`), the chosen id is kept in the job's
ComfyUI metadata and shown by every ComfyUI view, and a lookup by prompt id maps it back for the caller's
tenant. Another tenant's use of the same prompt id is therefore neither refused nor visible."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from comfyserve.contracts.comfyui import prompt_id_of
from comfyserve.contracts.jobs import JOB_ID_PATTERN, JobRecord, JobStatus
from comfyserve.ports import BlobNotFound, TransitionConflict
from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Invalid
from comfyserve.service.history import find_prompt, history_entry, prompt_number, queue_item, stored_job_id
from comfyserve.service.jobs import PAGE_LIMIT, cancel_queued, request_interrupt
from comfyserve.service.models import PromptRequest
from comfyserve.service.submit import Draft

_job_id = re.compile(JOB_ID_PATTERN)
MAX_SCAN_PAGES = 10
QUEUE_REMAINING_CAP = 1000  # the store's largest count


def prompt_draft(tenant: str, request: PromptRequest) -> Draft:
    """The submission a ComfyUI ``POST /prompt`` body asks for; its ``prompt_id`` must suit a job id."""
    if request.prompt_id is not None and not _job_id.match(request.prompt_id):
        raise Invalid("Invalid prompt_id", type_="invalid_prompt_id", details="use 1-64 letters, digits, '-' or '_'")
    extra = dict(request.extra_data)
    client_id = request.client_id or extra.pop("client_id", None)
    extra.pop("client_id", None)
    return Draft(
        prompt=request.prompt,
        targets=request.partial_execution_targets,
        job_id=stored_job_id(tenant, request.prompt_id) if request.prompt_id is not None else None,
        prompt_id=request.prompt_id,
        client_id=str(client_id) if client_id is not None else None,
        extra_data=extra,
        strict=False,
    )


HISTORY_LIMIT = 1000


def scan(deps: ServiceDeps, tenant: str, status: JobStatus | None, wanted: int) -> Iterator[JobRecord]:
    """The tenant's jobs newest first, page by page (at most ``MAX_SCAN_PAGES`` pages)."""
    cursor = None
    for _ in range(MAX_SCAN_PAGES):
        records, cursor = deps.jobs.list(tenant, status=status, limit=min(wanted, PAGE_LIMIT), cursor=cursor)
        yield from records
        if cursor is None:
            return


class HiddenHistory(BaseModel):
    """What ``POST /history`` removed from a tenant's history: everything finished up to ``cleared_at`` and
    the ``deleted`` ids. The jobs themselves stay (``/v1/jobs`` still shows them)."""

    cleared_at: datetime | None = None
    deleted: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, deps: ServiceDeps, tenant: str) -> HiddenHistory:
        with contextlib.suppress(BlobNotFound, ValueError):
            return cls.model_validate_json(deps.blobs.get(keys.hidden_history_key(tenant)))
        return cls()

    def hides(self, record: JobRecord) -> bool:
        finished = record.finished_at or record.updated_at
        return prompt_id_of(record) in self.deleted or (self.cleared_at is not None and finished <= self.cleared_at)


def in_history(record: JobRecord, hidden: HiddenHistory) -> bool:
    """Finished, not removed, and not a pending prompt that was deleted: ComfyUI never lists those."""
    dequeued = record.status is JobStatus.CANCELLED and record.started_at is None
    return record.status.is_terminal and not dequeued and not hidden.hides(record)


def edit_history(deps: ServiceDeps, tenant: str, delete: list[str], clear: bool) -> None:
    """``POST /history``: hide the named entries, or all finished so far with ``clear``."""
    hidden = HiddenHistory.load(deps, tenant)
    if clear:
        hidden = HiddenHistory(cleared_at=deps.clock())
    deleted = [job_id for job_id in dict.fromkeys([*hidden.deleted, *delete]) if _job_id.match(job_id)]
    hidden = HiddenHistory(cleared_at=hidden.cleared_at, deleted=deleted[-HISTORY_LIMIT:])
    deps.blobs.put(keys.hidden_history_key(tenant), hidden.model_dump_json().encode(), "application/json")


def history(deps: ServiceDeps, tenant: str, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
    """ComfyUI's window over the finished jobs, oldest first: ``offset`` skips that many of the oldest, and a
    negative offset with ``max_items`` means the last ``max_items``. History keeps the last ``HISTORY_LIMIT``."""
    hidden = HiddenHistory.load(deps, tenant)
    finished = (record for record in scan(deps, tenant, None, HISTORY_LIMIT) if in_history(record, hidden))
    oldest_first = list(itertools.islice(finished, HISTORY_LIMIT))[::-1]
    if offset < 0:
        offset = len(oldest_first) - max_items if max_items is not None else 0
    window = oldest_first[max(offset, 0) :]
    if max_items is not None:
        window = window[:max_items]
    return {prompt_id_of(record): history_entry(deps, record) for record in window}


def history_of(deps: ServiceDeps, tenant: str, prompt_id: str) -> dict[str, Any]:
    """``{prompt_id: entry}`` once the job has finished; ``{}`` before, and for unknown or foreign ids."""
    for record in records_of(deps, tenant, [prompt_id]):
        if in_history(record, HiddenHistory.load(deps, tenant)):
            return {prompt_id: history_entry(deps, record)}
    return {}


def queue(deps: ServiceDeps, tenant: str) -> dict[str, Any]:
    limit = PAGE_LIMIT

    def items(status: JobStatus) -> list[list[Any]]:
        records, _ = deps.jobs.list(tenant, status=status, limit=limit)
        return [queue_item(deps, record) for record in sorted(records, key=prompt_number)]

    return {"queue_running": items(JobStatus.RUNNING), "queue_pending": items(JobStatus.QUEUED)}


def queue_remaining(deps: ServiceDeps, tenant: str) -> int:
    """The tenant's jobs queued or running (ComfyUI's figure), counted up to QUEUE_REMAINING_CAP."""
    return deps.jobs.count(tenant, {JobStatus.QUEUED, JobStatus.RUNNING}, QUEUE_REMAINING_CAP)


def delete_queued(deps: ServiceDeps, tenant: str, prompt_ids: list[str], clear: bool) -> None:
    """Cancel pending jobs: the ones named, or all with ``clear``; running and unknown ids are skipped."""
    records = list(records_of(deps, tenant, prompt_ids))
    if clear:
        records += list(scan(deps, tenant, JobStatus.QUEUED, PAGE_LIMIT))
    for record in records:
        if record.status is JobStatus.QUEUED:
            with contextlib.suppress(TransitionConflict):
                cancel_queued(deps, record)


def interrupt(deps: ServiceDeps, tenant: str, prompt_id: str | None) -> None:
    """Interrupt the named job if it is running, or every running job of the tenant when none is named."""
    if prompt_id is None:
        records = list(scan(deps, tenant, JobStatus.RUNNING, PAGE_LIMIT))
    else:
        records = list(records_of(deps, tenant, [prompt_id]))
    for record in records:
        if record.status is JobStatus.RUNNING:
            with contextlib.suppress(TransitionConflict):
                request_interrupt(deps, record)


def records_of(deps: ServiceDeps, tenant: str, prompt_ids: list[str]) -> Iterator[JobRecord]:
    """The tenant's jobs that ComfyUI's views show under these prompt ids (unknown ids are skipped)."""
    for prompt_id in prompt_ids:
        record = find_prompt(deps, tenant, prompt_id)
        if record is not None:
            yield record
