"""Response bodies of the HTTP API (request bodies are the service's: ``comfyserve.service.models``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus, OutputRef, Progress, Timings
from comfyserve.service.errors import public_text
from comfyserve.service.models import COMFYUI_META_KEY
from comfyserve.service.submit import Submitted
from comfyserve.service.uploads import UploadTicket


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class Links(_Response):
    self: str = Field(description="This job (GET).")
    cancel: str = Field(description="Cancel it (POST).")

    @classmethod
    def of(cls, job_id: str) -> Links:
        return cls(self=f"/v1/jobs/{job_id}", cancel=f"/v1/jobs/{job_id}/cancel")


class JobAccepted(_Response):
    job_id: str
    status: JobStatus
    links: Links
    node_errors: dict[str, Any] = Field(
        default_factory=dict, description="Outputs that failed validation and will not run (ComfyUI's shape)."
    )

    @classmethod
    def of(cls, submitted: Submitted) -> JobAccepted:
        record = submitted.record
        return cls(
            job_id=record.job_id,
            status=record.status,
            links=Links.of(record.job_id),
            node_errors=submitted.node_errors,
        )


class OutputView(_Response):
    node_id: str
    filename: str
    content_type: str
    size: int
    url: str = Field(description="A presigned URL to GET the file from (expires).")


def _public(error: JobError | None) -> JobError | None:
    return None if error is None else error.model_copy(update={"message": public_text(error.message)})


class JobView(_Response):
    job_id: str
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = Field(default=None, description="Current node, its step / max, and nodes done / total.")
    timings: Timings = Field(description="Seconds: queued, cold start, execution, and per node.")
    outputs: list[OutputView] = Field(default_factory=list)
    error: JobError | None = None
    cancel_requested: bool = False
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    links: Links

    @classmethod
    def of(cls, record: JobRecord, url_for: Callable[[OutputRef], str]) -> JobView:
        return cls(
            job_id=record.job_id,
            status=record.status,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            progress=record.progress,
            timings=record.timings,
            outputs=[
                OutputView(
                    node_id=ref.node_id,
                    filename=ref.filename,
                    content_type=ref.content_type,
                    size=ref.size,
                    url=url_for(ref),
                )
                for ref in record.outputs
            ],
            error=_public(record.error),
            cancel_requested=record.cancel_requested,
            metadata={k: v for k, v in record.metadata.items() if k != COMFYUI_META_KEY},
            links=Links.of(record.job_id),
        )


class JobList(_Response):
    jobs: list[JobView]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page; null at the end.")


class ValidationView(_Response):
    ok: bool
    outputs: list[str] = Field(description="The output nodes that would run.")
    error: dict[str, Any] | None = Field(description="ComfyUI's error object, null when valid.")
    node_errors: dict[str, Any] = Field(description="ComfyUI's node_errors.")


class UploadView(_Response):
    key: str = Field(description="Name this key as an input: {'key': key}.")
    url: str
    method: str
    headers: dict[str, str] = Field(description="Headers the PUT must carry.")
    expires_in: int

    @classmethod
    def of(cls, ticket: UploadTicket) -> UploadView:
        return cls(
            key=ticket.key,
            url=ticket.url,
            method=ticket.method,
            headers=ticket.headers,
            expires_in=ticket.expires_in,
        )


class Health(_Response):
    status: str = Field(
        default="ok",
        description="ok; or starting while the workers' node catalog is not published yet (a ComfyUI fleet "
        "starting): a workflow the stand-in catalog refuses is answered 503 with Retry-After meanwhile.",
    )
    nodes: int = Field(description="Node classes in the catalog.")


class ErrorDetail(_Response):
    type: str
    message: str
    details: str = ""
    extra_info: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Response):
    """Every error, in ComfyUI's shape."""

    error: ErrorDetail
    node_errors: dict[str, Any] = Field(default_factory=dict)


class PromptAccepted(_Response):
    prompt_id: str
    number: int
    node_errors: dict[str, Any] = Field(default_factory=dict)


class ImageUploaded(_Response):
    """POST /upload/image: where the image was stored; name ``subfolder/name`` in a LoadImage to use it."""

    name: str = Field(description="The stored name: 'name (1).ext' … when the name held other content.")
    subfolder: str
    type: str = Field(description="The type asked for (every type is stored in your uploads).")


class QueueEdit(BaseModel):
    """POST /queue: cancel pending prompts; POST /history: remove entries from the history."""

    clear: bool = False
    delete: list[str] = Field(default_factory=list)


class InterruptRequest(BaseModel):
    """POST /interrupt: interrupt this prompt if it is running (every running prompt of yours when absent)."""

    prompt_id: str | None = None


class FreeRequest(BaseModel):
    """POST /free: accepted for compatibility; workers manage their own model memory."""

    unload_models: bool = False
    free_memory: bool = False


class CancelJobs(BaseModel):
    """POST /api/jobs/cancel: cancel these jobs, or none if any id is unknown."""

    job_ids: list[str] = Field(min_length=1, max_length=1000)
