"""The job record, its state machine and the queue message: what the service, the worker and the stores share.

State machine (every store enforces it through conditional writes)::

    queued ──▶ running ──▶ succeeded | failed | cancelled
       │          │
       └──────────┴──▶ cancelled          running ──▶ queued  (requeue)
    queued ──▶ failed  (the job never reached the queue: its message could not be sent)

``running → queued`` is the one backward edge. It exists for at-least-once delivery: a worker that drains
(shutdown, spot interruption) or a redelivered message that finds a stale ``running`` job puts the job back
to ``queued`` before claiming it again with ``queued → running``; ``attempts`` counts the claims. A job is
never claimed twice concurrently because ``running → running`` is not a transition. Terminal states are final.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TENANT_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
ORDER_KEY_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"

JobId = Annotated[str, Field(pattern=JOB_ID_PATTERN)]
Tenant = Annotated[str, Field(pattern=TENANT_PATTERN)]


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def utc_now() -> datetime:
    return datetime.now(UTC)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

ALLOWED_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(ValueError):
    """A caller asked for an edge the state machine does not have (a programming error, not a race)."""

    def __init__(self, from_status: JobStatus, to_status: JobStatus) -> None:
        super().__init__(f"invalid job transition {from_status.value} -> {to_status.value}")
        self.from_status = from_status
        self.to_status = to_status


def check_transition(from_status: JobStatus, to_status: JobStatus) -> None:
    if to_status not in ALLOWED_TRANSITIONS[from_status]:
        raise InvalidTransition(from_status, to_status)


class _Contract(BaseModel):
    # Unknown fields are ignored so that records and messages written by a newer version still load.
    model_config = ConfigDict(frozen=True, extra="ignore")


class InputRef(_Contract):
    """Where a workflow input lives: a blob key (claim-checked; URL inputs are fetched at submit time)."""

    key: str
    content_type: str | None = None


class OutputOptions(_Contract):
    format: Literal["png", "webp", "jpeg"] = "png"
    quality: int | None = Field(default=None, ge=1, le=100)


class WebhookSpec(_Contract):
    url: str = Field(min_length=1, max_length=2048)


class Progress(_Contract):
    """``step``/``max`` are the current node's own progress; ``nodes_done``/``nodes_total`` the whole graph's."""

    node: str | None = None
    step: int = Field(default=0, ge=0)
    max: int = Field(default=0, ge=0)
    nodes_done: int = Field(default=0, ge=0)
    nodes_total: int = Field(default=0, ge=0)


class Timings(_Contract):
    """Seconds. ``queued_s``: submit to claim; ``cold_start_s``: model loading; ``per_node``: node id -> wall;
    ``model_load_s``: the job's model loads per tier they came from (``s3``, ``efs``, ``nvme``, ``local``, ``ram``)."""

    queued_s: float | None = None
    cold_start_s: float | None = None
    execution_s: float | None = None
    per_node: dict[str, float] = Field(default_factory=dict)
    model_load_s: dict[str, float] = Field(default_factory=dict)


OutputType = Literal["output", "temp"]  # ComfyUI's folder of an output file: SaveImage's or PreviewImage's


class OutputRef(_Contract):
    node_id: str
    key: str
    filename: str
    content_type: str
    size: int = Field(ge=0)
    type: OutputType = "output"


UiOutputs = dict[str, dict[str, JsonValue]]
"""Node id -> the part of its UI output that is not a file (``PreviewAny``'s ``text``, numbers …), as ComfyUI's
history lists it."""


class JobError(_Contract):
    type: str
    message: str
    node_id: str | None = None
    node_type: str | None = None


FinalEvent = Literal["pending", "published"]  # the terminal event of a completed job: owed, or on the bus


class JobRecord(_Contract):
    job_id: JobId
    tenant: Tenant
    status: JobStatus = JobStatus.QUEUED
    created_at: UtcDatetime = Field(default_factory=utc_now)
    updated_at: UtcDatetime = Field(default_factory=utc_now)
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    workflow_key: str | None = None
    workflow: dict[str, JsonValue] | None = None
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    output: OutputOptions = Field(default_factory=OutputOptions)
    webhook: WebhookSpec | None = None
    timeout_s: int | None = Field(default=None, gt=0)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=256)
    body_hash: str | None = None
    progress: Progress | None = None
    timings: Timings = Field(default_factory=Timings)
    outputs: list[OutputRef] = Field(default_factory=list)
    ui: UiOutputs = Field(default_factory=dict)
    error: JobError | None = None
    attempts: int = Field(default=0, ge=0)
    cancel_requested: bool = False
    final_event: FinalEvent | None = None  # set by the completion use case (comfyserve.service.completion)
    # True from the create until the submit's queue message is sent and its ``Job Queued`` event published;
    # a job still owing them past a grace period is dispatched by the reconciler (comfyserve.service.reconcile).
    dispatch_pending: bool = False

    @model_validator(mode="after")
    def _one_workflow(self) -> JobRecord:
        if (self.workflow_key is None) == (self.workflow is None):
            raise ValueError("a job needs exactly one of workflow_key or workflow")
        if (self.idempotency_key is None) != (self.body_hash is None):
            raise ValueError("idempotency_key and body_hash go together")
        return self

    def list_order_key(self) -> str:
        """Sortable string for 'newest first' listings: fixed-width UTC creation time, then the job id."""
        return f"{self.created_at.strftime(ORDER_KEY_TIME)}#{self.job_id}"


class JobUpdate(_Contract):
    """The fields a store may change after creation (status moves only through ``transition``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    progress: Progress | None = None
    timings: Timings | None = None
    outputs: list[OutputRef] | None = None
    ui: UiOutputs | None = None
    error: JobError | None = None
    attempts: int | None = Field(default=None, ge=0)
    cancel_requested: bool | None = None
    final_event: FinalEvent | None = None
    dispatch_pending: bool | None = None

    def changes(self) -> dict[str, JsonValue]:
        """The explicitly given fields in JSON form (an explicit ``None`` clears a field)."""
        return self.model_dump(mode="json", exclude_unset=True)


class QueueMessage(_Contract):
    """What travels on the job queue: a claim check. The workflow itself stays in the store or the blob store."""

    job_id: JobId
    tenant: Tenant
    workflow_key: str | None = None
