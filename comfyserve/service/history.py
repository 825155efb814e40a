"""ComfyUI's views of a job (reference §2.3): history entries, queue items and output file names.

ComfyUI names an output by ``(filename, subfolder, type)`` alone. Here the subfolder starts with the prompt id
ComfyUI's views show for the job (``<prompt_id>[/<subfolder>]``), so ``GET /view`` finds the job first, and
through it the tenant's own blob.

A ``prompt_id`` the client chose is scoped to its tenant: the job is stored under :func:`stored_job_id`, and
:func:`find_prompt` maps the prompt id back for the caller's tenant.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from comfyserve.contracts.comfyui import ComfyUIMeta, prompt_id_of
from comfyserve.contracts.jobs import JOB_ID_PATTERN, JobRecord, JobStatus, OutputRef
from comfyserve.ports import BlobNotFound
from comfyserve.service.comfyui_uploads import find_upload
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Invalid, NotFound, public_text
from comfyserve.service.jobs import get_job

VIEW_TYPES = ("output", "input", "temp")
_prompt_id = re.compile(JOB_ID_PATTERN)
PROMPT_ID_NAMESPACE = uuid.UUID("5b0c6c1e-7d4a-4f0e-9a51-2f3c9e8d1a67")  # fixed: stored ids depend on it


def stored_job_id(tenant: str, prompt_id: str) -> str:
    """The job id a client-chosen ``prompt_id`` is stored under: one per tenant, in the format of new ids."""
    return uuid.uuid5(PROMPT_ID_NAMESPACE, f"{tenant}/{prompt_id}").hex


def find_prompt(deps: ServiceDeps, tenant: str, prompt_id: str) -> JobRecord | None:
    """The tenant's job shown as ``prompt_id``: one submitted with that id, or else one whose own id it is."""
    if not _prompt_id.match(prompt_id):
        return None
    for job_id in (stored_job_id(tenant, prompt_id), prompt_id):
        record = deps.jobs.get(tenant, job_id)
        if record is not None and prompt_id_of(record) == prompt_id:
            return record
    return None


def prompt_number(record: JobRecord) -> int:
    """ComfyUI's queue ``number``: the submission time in milliseconds, which orders jobs the same way."""
    return int(record.created_at.timestamp() * 1000)


def epoch_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def load_prompt(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    if record.workflow is not None:
        return dict(record.workflow)
    return _load_json(deps, record.workflow_key)


def load_extra_data(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    meta = ComfyUIMeta.of(record.metadata)
    extra = _load_json(deps, meta.extra_data_key) if meta.extra_data_key else {}
    return {**extra, "client_id": meta.client_id} if meta.client_id else extra


def _load_json(deps: ServiceDeps, key: str | None) -> dict[str, Any]:
    try:
        document = json.loads(deps.blobs.get(key)) if key else {}
    except (BlobNotFound, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def output_location(ref: OutputRef, job_id: str) -> dict[str, str]:
    """``{"filename", "subfolder", "type"}`` as ComfyUI's ``ui.images`` entries have them (``temp`` for
    previews)."""
    path = PurePosixPath(ref.filename)
    parent = path.parent.as_posix()
    subfolder = job_id if parent == "." else f"{job_id}/{parent}"
    return {"filename": path.name, "subfolder": subfolder, "type": ref.type}


def queue_item(deps: ServiceDeps, record: JobRecord) -> list[Any]:
    """``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
    meta = ComfyUIMeta.of(record.metadata)
    return [
        prompt_number(record),
        prompt_id_of(record),
        load_prompt(deps, record),
        load_extra_data(deps, record),
        meta.outputs,
    ]


def history_entry(deps: ServiceDeps, record: JobRecord) -> dict[str, Any]:
    """The history entry of a finished job (ComfyUI lists only finished prompts in its history)."""
    outputs: dict[str, dict[str, Any]] = {node_id: {} for node_id in record.ui}
    for ref in record.outputs:  # a node's files first, then its other values, as ComfyUI's PreviewVideo orders them
        images = outputs.setdefault(ref.node_id, {}).setdefault("images", [])
        images.append(output_location(ref, prompt_id_of(record)))
    for node_id, values in record.ui.items():
        outputs[node_id].update(values)
    succeeded = record.status is JobStatus.SUCCEEDED
    return {
        "prompt": queue_item(deps, record),
        "outputs": outputs,
        "status": {
            "status_str": "success" if succeeded else "error",
            "completed": succeeded,
            "messages": _messages(record),
        },
        "meta": {
            node_id: {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            for node_id in outputs
        },
    }


def _messages(record: JobRecord) -> list[list[Any]]:
    prompt_id = prompt_id_of(record)
    finished = epoch_ms(record.finished_at or record.updated_at)
    messages: list[list[Any]] = []
    if record.started_at is not None:
        messages.append(["execution_start", {"prompt_id": prompt_id, "timestamp": epoch_ms(record.started_at)}])
        messages.append(
            ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": epoch_ms(record.started_at)}]
        )
    error = record.error
    node = {"node_id": error.node_id if error else None, "node_type": error.node_type if error else None}
    if record.status is JobStatus.SUCCEEDED:
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": finished}])
    elif record.status is JobStatus.CANCELLED:
        messages.append(
            ["execution_interrupted", {"prompt_id": prompt_id, **node, "executed": [], "timestamp": finished}]
        )
    elif record.status is JobStatus.FAILED:
        details = {
            "exception_message": public_text(error.message) if error else "",
            "exception_type": error.type if error else "",
            "traceback": [],
            "current_inputs": {},
            "current_outputs": [],
        }
        messages.append(
            [
                "execution_error",
                {"prompt_id": prompt_id, **node, "executed": [], **details, "timestamp": finished},
            ]
        )
    return messages


def find_output(deps: ServiceDeps, tenant: str, filename: str, subfolder: str, type_: str) -> OutputRef:
    """The tenant's file that ``/view?filename=&subfolder=&type=`` names: an output, or with ``type=input`` an
    upload (an upload stored with type temp or output is found under that type too); :class:`Invalid` for a
    name that tries to leave its folder, :class:`NotFound` for anything else that does not match."""
    if type_ not in VIEW_TYPES:
        raise Invalid("Invalid type", type_="invalid_view", details=f"type must be one of {', '.join(VIEW_TYPES)}")
    if not filename or subfolder.startswith("/") or filename.startswith("/") or "\\" in filename + subfolder:
        raise Invalid("Invalid filename", type_="invalid_view", details="absolute paths are not allowed")
    parts = [part for part in subfolder.split("/") if part] + [filename]
    if "/" in filename or any(part in (".", "..") for part in parts):
        raise Invalid("Invalid filename", type_="invalid_view", details="'..' and '/' are not allowed in a filename")
    path = "/".join(parts)
    if type_ == "input":
        upload = find_upload(deps, tenant, path)
        if upload is None:
            raise NotFound("Input not found", type_="input_not_found", details=path)
        return upload
    try:
        return _job_output(deps, tenant, parts, f"{subfolder}/{filename}")
    except NotFound:
        upload = find_upload(deps, tenant, path)
        if upload is None:
            raise
        return upload


def _job_output(deps: ServiceDeps, tenant: str, parts: list[str], shown: str) -> OutputRef:
    if len(parts) < 2:
        raise NotFound("Output not found", type_="output_not_found", details=parts[-1])
    record = find_prompt(deps, tenant, parts[0]) or get_job(deps, tenant, parts[0])
    relative = "/".join(parts[1:])
    for ref in record.outputs:
        if ref.filename == relative:
            return ref
    raise NotFound("Output not found", type_="output_not_found", details=shown)
