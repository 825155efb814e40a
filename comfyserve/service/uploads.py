"""Uploads: presigned PUT URLs under the tenant's own ``uploads/`` folder, and the checks for a key that a
request names as one of its uploads."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from comfyserve.ports import BlobNotFound, InvalidKey, validate_key
from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Forbidden, Invalid
from comfyserve.service.models import UploadRequest

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class UploadTicket:
    """PUT the file's bytes to ``url`` with ``headers``; then name ``key`` as an input (``{"key": key}``)."""

    key: str
    url: str
    method: str
    headers: dict[str, str]
    expires_in: int


def safe_filename(filename: str) -> str:
    """The last path segment, reduced to characters that are safe in any key (never empty, '.' or '..')."""
    tail = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = UNSAFE.sub("_", tail).strip("._")[:128]
    return name or "input"


def create_upload(deps: ServiceDeps, tenant: str, request: UploadRequest) -> UploadTicket:
    key = f"{keys.uploads_prefix(tenant)}{deps.new_id()}/{safe_filename(request.filename)}"
    expires = deps.settings.upload_expiry_s
    url = deps.blobs.presigned_put(key, expires, request.content_type)
    return UploadTicket(key, url, "PUT", {"Content-Type": request.content_type}, expires)


def check_upload_key(tenant: str, key: str, what: str) -> str:
    """``key`` if it is a well-formed key in the tenant's uploads; :class:`Invalid` or :class:`Forbidden`."""
    try:
        validate_key(key)
    except InvalidKey as exc:
        raise Invalid("Invalid key", type_="invalid_key", details=f"{what}: {exc.reason}") from None
    prefix = keys.uploads_prefix(tenant)
    if not key.startswith(prefix):
        raise Forbidden("Not one of your uploads", type_="invalid_key", details=f"{what}: keys start with {prefix}")
    return key


def load_uploaded_workflow(deps: ServiceDeps, tenant: str, key: str) -> Any:
    """The JSON document uploaded to ``key`` (validated afterwards like an inline workflow)."""
    try:
        return json.loads(deps.blobs.get(check_upload_key(tenant, key, "workflow_key")))
    except BlobNotFound:
        raise Invalid("Workflow not found", type_="invalid_key", details=f"workflow_key: nothing at {key}") from None
    except ValueError as exc:
        raise Invalid("Workflow is not JSON", type_="invalid_prompt", details=f"workflow_key: {exc}") from None
