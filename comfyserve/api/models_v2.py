"""Comfy API v2 response bodies, for the OpenAPI document (the routes build them in ``service.v2_jobs`` and
``service.assets``; comfy-sdk's own models are the contract they follow)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

V2Status = Literal["queued", "running", "canceling", "succeeded", "canceled", "failed", "expired"]


class V2Progress(BaseModel):
    value: float = Field(ge=0, le=1, description="Overall fraction: finished nodes plus the current node's steps.")
    nodes_done: int
    nodes_total: int
    current_node: str | None = None
    step: int | None = None
    steps: int | None = None
    message: str | None = None


class V2Output(BaseModel):
    node_id: str
    name: str
    type: Literal["image", "video", "audio", "text", "file"]
    content_type: str
    size_bytes: int
    id: str = Field(description="The output's asset id: out.<job id>.<n>.")
    hash: str | None = None
    url: str = Field(description="A presigned URL to GET the file from (expires).")
    url_expires_at: str
    job_id: str


class V2JobError(BaseModel):
    code: str
    message: str
    node_id: str | None = None
    class_type: str | None = None


class V2Urls(BaseModel):
    self: str
    events: str
    cancel: str


class V2Job(BaseModel):
    id: str
    status: V2Status
    created_at: str
    started_at: str | None
    completed_at: str | None
    expires_at: str
    queue_position: int | None
    progress: V2Progress | None
    outputs: list[V2Output]
    error: V2JobError | None
    metrics: dict[str, int | None]
    metadata: dict[str, str]
    urls: V2Urls


class V2JobSummary(BaseModel):
    id: str
    status: V2Status
    create_time: str
    update_time: str
    outputs_count: int
    metadata: dict[str, str]


class V2JobList(BaseModel):
    jobs: list[V2JobSummary]
    next_cursor: str | None = Field(default=None, description="Absent on the last page.")


class V2Asset(BaseModel):
    id: str
    hash: str | None = Field(description="blake3:<hex>; null for job outputs.")
    size_bytes: int
    content_type: str
    file_path: str | None = None
    created_new: bool | None = Field(default=None, description="On create: whether the bytes were new to you.")
    created_at: str
    url: str
    url_expires_at: str
    expires_at: str | None = None
    job_id: str | None = None


class V2Workflow(BaseModel):
    workflow: dict[str, Any]
    format: Literal["api"]


class V2ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class V2ErrorEnvelope(BaseModel):
    """Every error on /api/v2, in that API's envelope."""

    error: V2ErrorDetail
