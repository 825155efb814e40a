"""Comfy API v2 jobs (the API of Comfy's ``comfy-sdk``) over the job service, per tenant.

Statuses: ``queued``, ``running``, ``canceling`` (a cancel asked of a running job), ``succeeded``,
``canceled``, ``failed``, and ``expired`` for a job still not finished at its ``expires_at``. Outputs are
assets with ids ``out.<job id>.<n>``. ``{"__type": "core/ASSET", "info": {"id": …}}`` in a workflow names an
asset of the caller's; it becomes a job input. The event stream is a snapshot: each request answers the
job's current state as server-sent events and ends (outputs and the terminal status once it is finished);
clients reconnect for more, as comfy-sdk does.
"""

from __future__ import annotations

import json
import posixpath
import re
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from comfyserve.contracts.jobs import JobRecord, JobStatus, OutputRef
from comfyserve.service import assets
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Invalid, NotFound, public_text
from comfyserve.service.history import load_prompt
from comfyserve.service.idempotency import body_hash
from comfyserve.service.jobs import PAGE_LIMIT, get_job
from comfyserve.service.jobs import list_jobs as page_of_jobs
from comfyserve.service.models import COMFYUI_META_KEY, MAX_METADATA_BYTES, InputSource
from comfyserve.service.submit import Draft

ASSET_TYPE = "core/ASSET"
RETENTION = timedelta(days=30)
UI_KEYS = ("nodes", "links")
_OUTPUT_ID = re.compile(r"^out\.([A-Za-z0-9_-]{1,64})\.(\d{1,6})$")
MAX_PAGE_SCAN = 10
MAX_LABELS = 16


class JobRequest(BaseModel):
    """POST /api/v2/jobs."""

    workflow: dict[str, Any] = Field(description="An API-format workflow; core/ASSET references name your assets.")
    extra_data: dict[str, Any] | None = None
    metadata: dict[str, str] | None = Field(default=None, description="String labels to filter the list by.")


def status_of(record: JobRecord, now: datetime) -> str:
    if record.status is JobStatus.CANCELLED:
        return "canceled"
    if not record.status.is_terminal and now > record.created_at + RETENTION:
        return "expired"
    if record.status is JobStatus.RUNNING and record.cancel_requested:
        return "canceling"
    return record.status.value


def _kind(content_type: str) -> str:
    head = content_type.split("/", 1)[0]
    return head if head in ("image", "video", "audio", "text") else "file"


def output_view(deps: ServiceDeps, record: JobRecord, index: int, ref: OutputRef) -> dict[str, Any]:
    expiry = deps.settings.presign_expiry_s
    return {
        "node_id": ref.node_id,
        "name": posixpath.basename(ref.filename),
        "type": _kind(ref.content_type),
        "content_type": ref.content_type,
        "size_bytes": ref.size,
        "id": f"out.{record.job_id}.{index}",
        "hash": None,
        "url": deps.blobs.presigned_get(ref.key, expiry),
        "url_expires_at": (deps.clock() + timedelta(seconds=expiry)).isoformat(),
        "job_id": record.job_id,
    }


def _queue_position(deps: ServiceDeps, record: JobRecord) -> int | None:
    if record.status is not JobStatus.QUEUED:
        return None
    queued, _ = deps.jobs.list(record.tenant, status=JobStatus.QUEUED, limit=PAGE_LIMIT)
    ahead = [other for other in queued if other.created_at < record.created_at]
    return len(ahead) + 1


def _progress(record: JobRecord) -> dict[str, Any] | None:
    progress = record.progress
    if progress is None:
        return None
    total = max(progress.nodes_total, 1)
    step = progress.step / progress.max if progress.max else 0.0
    value = min((progress.nodes_done + step) / total, 1.0)
    message = f"{progress.node} {progress.step}/{progress.max}" if progress.node and progress.max else None
    return {
        "value": value,
        "nodes_done": progress.nodes_done,
        "nodes_total": progress.nodes_total,
        "current_node": progress.node,
        "step": progress.step or None,
        "steps": progress.max or None,
        "message": message,
    }


def labels(record: JobRecord) -> dict[str, str]:
    return {k: v for k, v in record.metadata.items() if k != COMFYUI_META_KEY and isinstance(v, str)}


def urls(base: str, job_id: str) -> dict[str, str]:
    self_url = f"{base}/api/v2/jobs/{job_id}"
    return {"self": self_url, "events": f"{self_url}/events", "cancel": f"{self_url}/cancel"}


def job_view(deps: ServiceDeps, record: JobRecord, base: str) -> dict[str, Any]:
    """The v2 job object; ``base`` is the path the API is mounted under ('' locally, '/<stage>' in AWS)."""
    error = record.error
    timings = record.timings
    return {
        "id": record.job_id,
        "status": status_of(record, deps.clock()),
        "created_at": record.created_at.isoformat(),
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "completed_at": record.finished_at.isoformat() if record.finished_at else None,
        "expires_at": (record.created_at + RETENTION).isoformat(),
        "queue_position": _queue_position(deps, record),
        "progress": _progress(record),
        "outputs": [output_view(deps, record, i, ref) for i, ref in enumerate(record.outputs)],
        "error": None
        if error is None
        else {
            "code": error.type,
            "message": public_text(error.message),
            "node_id": error.node_id,
            "class_type": error.node_type,
        },
        "metrics": {
            "queue_ms": None if timings.queued_s is None else int(timings.queued_s * 1000),
            "execution_ms": None if timings.execution_s is None else int(timings.execution_s * 1000),
        },
        "metadata": labels(record),
        "urls": urls(base, record.job_id),
    }


def list_item(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.job_id,
        "status": status_of(record, deps.clock()),
        "create_time": record.created_at.isoformat(),
        "update_time": record.updated_at.isoformat(),
        "outputs_count": len(record.outputs),
        "metadata": labels(record),
    }


# -- submit ---------------------------------------------------------------------------------------------


def _asset_name(record: assets.AssetRecord) -> str:
    suffix = posixpath.splitext(record.file_path or "")[1][:16]
    return f"asset-{record.id}{suffix}"


def _missing_asset(details: str) -> Invalid:
    return Invalid("Missing asset", type_="missing_asset", details=details)


def _resolve(deps: ServiceDeps, tenant: str, value: Any, inputs: dict[str, InputSource]) -> Any:
    if not (isinstance(value, dict) and value.get("__type") == ASSET_TYPE):
        return value
    info = value.get("info")
    asset_id = info.get("id") if isinstance(info, dict) else None
    if not isinstance(asset_id, str):
        raise _missing_asset("a core/ASSET reference needs info.id")
    try:
        record = assets.get(deps, tenant, asset_id)
    except NotFound:
        raise _missing_asset(f"no asset {asset_id[:64]!r}") from None
    name = _asset_name(record)
    inputs[name] = InputSource(key=assets.content_key(tenant, record.hex), content_type=record.content_type)
    return name


def draft(deps: ServiceDeps, tenant: str, request: JobRequest, idempotency_key: str | None) -> Draft:
    """The submission a v2 request asks for: asset references become inputs; every output must be valid."""
    workflow = request.workflow
    if all(key in workflow for key in UI_KEYS):
        raise Invalid(
            "The workflow is in the editor's format",
            type_="workflow_format_ui",
            details="export it with 'Export (API)' in ComfyUI",
        )
    metadata = dict(request.metadata or {})
    if len(metadata) > MAX_LABELS or len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        details = f"at most {MAX_LABELS} labels and {MAX_METADATA_BYTES} bytes"
        raise Invalid("Invalid metadata", type_="metadata_invalid", details=details)
    if COMFYUI_META_KEY in metadata:
        raise Invalid("Invalid metadata", type_="metadata_invalid", details=f"{COMFYUI_META_KEY!r} is reserved")
    inputs: dict[str, InputSource] = {}
    prompt = {
        node_id: {**node, "inputs": {k: _resolve(deps, tenant, v, inputs) for k, v in node["inputs"].items()}}
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict)
        else node
        for node_id, node in workflow.items()
    }
    return Draft(
        prompt=prompt,
        inputs=inputs,
        metadata=dict(metadata),
        extra_data=dict(request.extra_data or {}),
        idempotency_key=idempotency_key,
        body_hash=body_hash(request.model_dump(mode="json")) if idempotency_key else None,
    )


# -- reads ----------------------------------------------------------------------------------------------


def list_jobs(
    deps: ServiceDeps, tenant: str, filters: dict[str, str], limit: int, cursor: str | None
) -> tuple[list[JobRecord], str | None]:
    """A page of the tenant's jobs, newest first, whose labels match ``filters``: store pages are read until
    one has a match (at most ``MAX_PAGE_SCAN``), so a page may hold fewer than ``limit`` jobs."""
    for _ in range(MAX_PAGE_SCAN):
        records, cursor = page_of_jobs(deps, tenant, status=None, limit=limit, cursor=cursor)
        matching = [r for r in records if all(labels(r).get(k) == v for k, v in filters.items())]
        if matching or cursor is None:
            return matching, cursor
    return [], cursor


def workflow_of(deps: ServiceDeps, tenant: str, job_id: str) -> dict[str, Any]:
    return {"workflow": load_prompt(deps, get_job(deps, tenant, job_id)), "format": "api"}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def events(deps: ServiceDeps, record: JobRecord, base: str) -> str:
    """The job's current state as server-sent events: its status and progress while it runs; its outputs and
    then its terminal status once finished."""
    view = job_view(deps, record, base)
    status = {"status": view["status"], "queue_position": view["queue_position"]}
    if view["status"] in ("succeeded", "failed", "canceled", "expired"):
        return "".join(_sse("output", output) for output in view["outputs"]) + _sse("status", status)
    frames = [_sse("status", status)]
    if view["progress"] is not None:
        frames.append(_sse("progress", view["progress"]))
    return "".join(frames)


def output_asset(deps: ServiceDeps, tenant: str, asset_id: str) -> tuple[JobRecord, int, OutputRef] | None:
    """The job output an ``out.<job id>.<n>`` asset id names, ``None`` for another id; :class:`NotFound`."""
    match = _OUTPUT_ID.match(asset_id)
    if match is None:
        return None
    record = deps.jobs.get(tenant, match.group(1))
    index = int(match.group(2))
    if record is None or index >= len(record.outputs):
        raise NotFound("Asset not found", type_="not_found", details=f"no asset {asset_id!r}")
    return record, index, record.outputs[index]


def output_asset_view(deps: ServiceDeps, record: JobRecord, index: int, ref: OutputRef) -> dict[str, Any]:
    """A job output as a v2 asset object (no hash: outputs are not hashed)."""
    output = output_view(deps, record, index, ref)
    finished = record.finished_at or record.updated_at
    return {
        "id": output["id"],
        "hash": None,
        "size_bytes": ref.size,
        "content_type": ref.content_type,
        "file_path": output["name"],
        "created_at": finished.isoformat(),
        "url": output["url"],
        "url_expires_at": output["url_expires_at"],
        "expires_at": (record.created_at + RETENTION).isoformat(),
        "job_id": record.job_id,
    }
