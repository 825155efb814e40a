"""Job events: what subscribers (EventBridge rules, webhooks, the local event log) receive."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from comfyserve.contracts.jobs import (
    JobError,
    JobId,
    JobRecord,
    JobStatus,
    OutputRef,
    Progress,
    Tenant,
    Timings,
    UtcDatetime,
    WebhookSpec,
    utc_now,
)


class JobEventType(enum.StrEnum):
    JOB_QUEUED = "JobQueued"
    JOB_STARTED = "JobStarted"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    JOB_CANCELLED = "JobCancelled"
    JOB_PROGRESS = "JobProgress"


EVENT_STATUS: dict[JobEventType, JobStatus] = {
    JobEventType.JOB_QUEUED: JobStatus.QUEUED,
    JobEventType.JOB_STARTED: JobStatus.RUNNING,
    JobEventType.JOB_PROGRESS: JobStatus.RUNNING,
    JobEventType.JOB_SUCCEEDED: JobStatus.SUCCEEDED,
    JobEventType.JOB_FAILED: JobStatus.FAILED,
    JobEventType.JOB_CANCELLED: JobStatus.CANCELLED,
}


class JobEvent(BaseModel):
    """One event. ``event_id`` lets subscribers drop duplicates (delivery is at least once).

    ``webhook`` is the job's own destination, carried so that a webhook dispatcher subscribed to the bus needs
    no lookup; it is left out of the webhook body itself.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    type: JobEventType
    job_id: JobId
    tenant: Tenant
    status: JobStatus
    outputs: list[OutputRef] = Field(default_factory=list)
    error: JobError | None = None
    timings: Timings = Field(default_factory=Timings)
    progress: Progress | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    webhook: WebhookSpec | None = None
    time: UtcDatetime = Field(default_factory=utc_now)

    @classmethod
    def from_record(
        cls, event_type: JobEventType, record: JobRecord, time: datetime | None = None, event_id: str | None = None
    ) -> JobEvent:
        """The event for ``record`` as it stands; the status comes from the event type (a new ``event_id``
        unless one is given)."""
        return cls(
            type=event_type,
            job_id=record.job_id,
            tenant=record.tenant,
            status=EVENT_STATUS[event_type],
            outputs=record.outputs,
            error=record.error,
            timings=record.timings,
            progress=record.progress if event_type is JobEventType.JOB_PROGRESS else None,
            metadata=record.metadata,
            webhook=record.webhook,
            time=time or utc_now(),
            event_id=event_id or uuid.uuid4().hex,
        )

    def webhook_body(self) -> bytes:
        """The JSON body POSTed to the job's webhook."""
        return self.model_dump_json(exclude={"webhook"}).encode()
