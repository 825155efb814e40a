"""What callers hand the job service: the bodies of submit, validate and upload requests (pydantic, with the
descriptions the OpenAPI document shows)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from comfyserve.contracts.comfyui import COMFYUI_META_KEY
from comfyserve.contracts.jobs import OutputOptions, WebhookSpec

MAX_METADATA_BYTES = 16 * 1024
MAX_TIMEOUT_S = 24 * 3600


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSource(_Request):
    """One input file: exactly one of ``url``, ``key`` or ``base64``."""

    url: str | None = Field(
        default=None,
        max_length=2048,
        description="An http(s) URL fetched at submit time (public addresses only, no redirects).",
    )
    key: str | None = Field(
        default=None, max_length=1024, description="The key of one of your uploads (from POST /v1/uploads)."
    )
    base64: str | None = Field(
        default=None, description="The file's bytes in base64 (a 'data:<type>;base64,' prefix is accepted)."
    )
    content_type: str | None = Field(default=None, max_length=255, description="Overrides the sniffed type.")

    @model_validator(mode="after")
    def _one_source(self) -> InputSource:
        if sum(value is not None for value in (self.url, self.key, self.base64)) != 1:
            raise ValueError("an input needs exactly one of url, key or base64")
        return self


class JobSubmission(_Request):
    """POST /v1/jobs: a workflow (inline or an uploaded key), its inputs and what to do with the outputs.
    Every output node must pass validation (POST /prompt keeps ComfyUI's rule: the valid outputs run)."""

    workflow: dict[str, Any] | None = Field(
        default=None,
        description="The workflow in ComfyUI's API format (or {'prompt': {...}}), or as ComfyUI's editor saves it.",
    )
    workflow_key: str | None = Field(
        default=None,
        max_length=1024,
        description="Instead of 'workflow': the key of an uploaded workflow JSON.",
    )
    inputs: dict[str, InputSource] = Field(
        default_factory=dict, description="Input files by the name LoadImage values use."
    )
    output: OutputOptions = Field(default_factory=OutputOptions, description="Output image format and quality.")
    webhook: WebhookSpec | None = Field(default=None, description="A URL to POST signed job events to.")
    timeout_s: int | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S, description="Execution time limit.")
    metadata: dict[str, JsonValue] = Field(
        default_factory=dict, description="Your own data, echoed in job views and events (at most 16 KiB)."
    )
    partial_execution_targets: list[str] | None = Field(
        default=None, description="Run only these output nodes (ComfyUI's partial execution)."
    )

    @model_validator(mode="after")
    def _one_workflow(self) -> JobSubmission:
        if (self.workflow is None) == (self.workflow_key is None):
            raise ValueError("give exactly one of workflow or workflow_key")
        return self

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if COMFYUI_META_KEY in value:
            raise ValueError(f"the metadata key {COMFYUI_META_KEY!r} is reserved")
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        return value


class ValidateRequest(_Request):
    """POST /v1/validate: check a workflow against the node catalog without running or recording anything."""

    workflow: dict[str, Any] = Field(
        description="The workflow in ComfyUI's API format (or {'prompt': {...}}), or as ComfyUI's editor saves it."
    )
    input_names: list[str] | None = Field(
        default=None, description="The input names LoadImage may use (unchecked when absent)."
    )
    partial_execution_targets: list[str] | None = Field(default=None, description="Validate only these outputs.")
    strict: bool = Field(
        default=True, description="Every output must be valid (false: ComfyUI's rule, the valid ones run)."
    )


class UploadRequest(_Request):
    """POST /v1/uploads: ask for a presigned URL to PUT one input file to."""

    filename: str = Field(default="input", min_length=1, max_length=255, description="A name kept in the key.")
    content_type: str = Field(
        default="application/octet-stream",
        min_length=1,
        max_length=255,
        description="The Content-Type the upload must be sent with.",
    )


class PromptRequest(BaseModel):
    """POST /prompt, ComfyUI's body. Fields ComfyUI accepts but a queue service cannot honour (``number``,
    ``front``) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: dict[str, Any] = Field(description="The workflow in API format.")
    client_id: str | None = Field(default=None, max_length=256, description="The websocket client to notify.")
    extra_data: dict[str, Any] = Field(default_factory=dict, description="e.g. {'extra_pnginfo': {...}}.")
    prompt_id: str | None = Field(default=None, description="Use this id instead of a new one.")
    partial_execution_targets: list[str] | None = Field(default=None, description="Run only these outputs.")

    @field_validator("prompt_id", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return None if value is None else str(value)
