"""Presigned uploads: a URL to PUT one input file to, under the tenant's own ``uploads/`` folder."""

from __future__ import annotations

import re
from dataclasses import dataclass

from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
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
