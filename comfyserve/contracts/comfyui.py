"""ComfyUI's own data the service records with a job, for the worker and for ComfyUI's routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from comfyserve.contracts.jobs import JobRecord

COMFYUI_META_KEY = "comfyui"


class ComfyUIMeta(BaseModel):
    """What the service records under ``metadata["comfyui"]`` of every job, for the worker and for
    ComfyUI's routes: the websocket client to notify, the outputs that passed validation, the requested
    partial-execution targets, where ComfyUI's ``extra_data`` (``extra_pnginfo`` …) was claim-checked, and the
    ``prompt_id`` the client chose (the stored job id is derived from it per tenant)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client_id: str | None = None
    outputs: list[str] = Field(default_factory=list)
    targets: list[str] | None = None
    extra_data_key: str | None = None
    prompt_id: str | None = None

    @classmethod
    def of(cls, metadata: dict[str, JsonValue]) -> ComfyUIMeta:
        raw = metadata.get(COMFYUI_META_KEY)
        return cls.model_validate(raw) if isinstance(raw, dict) else cls()


def prompt_id_of(record: JobRecord) -> str:
    """The id ComfyUI's views show for a job: the client's own ``prompt_id``, else the job id."""
    return ComfyUIMeta.of(record.metadata).prompt_id or record.job_id
