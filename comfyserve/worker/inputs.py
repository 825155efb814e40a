"""Fetching a job's workflow and inputs from the blob store (claim checks; URL inputs were fetched at submit)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from comfyserve.contracts.comfyui import ComfyUIMeta
from comfyserve.contracts.jobs import InputRef, JobRecord
from comfyserve.engine.errors import ComfyServeError
from comfyserve.ports import BlobNotFound, BlobStore, PortError


class InputError(ComfyServeError):
    """A workflow or input could not be fetched; the job fails with type ``input_error``."""


def load_workflow(record: JobRecord, blobs: BlobStore) -> dict[str, Any]:
    if record.workflow is not None:
        return dict(record.workflow)
    assert record.workflow_key is not None  # the record's validator guarantees one of the two
    try:
        document = json.loads(blobs.get(record.workflow_key))
    except (BlobNotFound, ValueError) as exc:
        raise InputError(f"cannot load the workflow from {record.workflow_key}: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"the workflow at {record.workflow_key} is not a JSON object")
    return document


def load_extra_data(meta: ComfyUIMeta, blobs: BlobStore) -> dict[str, Any]:
    """ComfyUI's ``extra_data`` of a job submitted through ``POST /prompt`` (claim-checked by the service)."""
    if meta.extra_data_key is None:
        return {}
    try:
        document = json.loads(blobs.get(meta.extra_data_key))
    except (BlobNotFound, ValueError) as exc:
        raise InputError(f"cannot load extra_data from {meta.extra_data_key}: {exc}") from exc
    return document if isinstance(document, dict) else {}


def _local_name(index: int, name: str) -> str:
    tail = name.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9._-]', '_', tail)[:100] or 'input'}"


def fetch_inputs(inputs: dict[str, InputRef], blobs: BlobStore, folder: Path) -> dict[str, Path]:
    """Write each input to ``folder``; returns the ``LoadImage`` value → local file mapping."""
    files: dict[str, Path] = {}
    if inputs:
        folder.mkdir(parents=True, exist_ok=True)
    for index, (name, ref) in enumerate(sorted(inputs.items())):
        try:
            data = blobs.get(ref.key)
        except (PortError, OSError) as exc:
            raise InputError(f"cannot fetch input {name!r}: {exc}") from exc
        path = folder / _local_name(index, name)
        path.write_bytes(data)
        files[name] = path
    return files
