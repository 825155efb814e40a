"""The job manifest: the last object a worker writes for a finished job, and the completion path's input.

``outputs/{tenant}/{job_id}/manifest.json`` lists every output of the job (all written before it), the final
status with its error, and how the run went (timings per node, cold start, cache hits, the worker and the
attempt). Its creation is the "object created" signal that the completion use case
(``comfyserve.service.completion``) turns into the job's terminal state and its one terminal event.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from comfyserve.contracts.jobs import (
    JobError,
    JobId,
    JobStatus,
    OutputRef,
    Tenant,
    Timings,
    UiOutputs,
    UtcDatetime,
    utc_now,
)

MANIFEST_NAME = "manifest.json"
ManifestStatus = Literal["succeeded", "failed", "cancelled"]


def job_prefix(tenant: str, job_id: str) -> str:
    """Where a job's outputs live: ``outputs/{tenant}/{job_id}/``."""
    return f"outputs/{tenant}/{job_id}/"


def manifest_key(tenant: str, job_id: str) -> str:
    return job_prefix(tenant, job_id) + MANIFEST_NAME


def parse_manifest_key(key: str) -> tuple[str, str] | None:
    """``(tenant, job_id)`` of a manifest key, or ``None`` for any other key."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != "outputs" or parts[3] != MANIFEST_NAME or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class JobManifest(BaseModel):
    """One finished attempt of a job. A ``failed`` one carries its ``error``; a ``succeeded`` one none."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: Literal[1] = 1
    job_id: JobId
    tenant: Tenant
    status: ManifestStatus
    outputs: list[OutputRef] = Field(default_factory=list)
    ui: UiOutputs = Field(default_factory=dict)  # the non-file UI outputs, by node
    error: JobError | None = None
    timings: Timings = Field(default_factory=Timings)
    cold_start: bool = False  # the worker's first job since it started (timings.cold_start_s is its start-up)
    cache_hits: list[str] = Field(default_factory=list)  # node ids served from the worker's output cache
    executed: list[str] = Field(default_factory=list)  # node ids that ran
    nodes_total: int = Field(default=0, ge=0)
    worker_id: str = ""
    backend: str = ""
    attempt: int = Field(default=1, ge=1)
    written_at: UtcDatetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _error_iff_failed(self) -> JobManifest:
        if self.status == "failed" and self.error is None:
            raise ValueError("a failed manifest needs its error")
        if self.status == "succeeded" and self.error is not None:
            raise ValueError("a succeeded manifest has no error")
        return self

    @property
    def job_status(self) -> JobStatus:
        return JobStatus(self.status)

    @property
    def key(self) -> str:
        return manifest_key(self.tenant, self.job_id)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=2).encode()
