"""Comfy API v2 assets over the blob store, per tenant.

Bytes are content-addressed by their blake3 hash under the tenant's uploads
(``uploads/{tenant}/assets/{hex}``, so a job reads them as any upload); each asset is a record
(``assets/{tenant}/{id}.json``) naming its bytes, and ``assets/{tenant}/by-hash/{hex}/{id}`` marks which
assets share them: deleting the last one deletes the bytes. Hashes are never shared across tenants, so a
probe by hash tells a tenant only about its own bytes.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from blake3 import blake3
from pydantic import BaseModel, Field, ValidationError

from comfyserve.ports import BlobNotFound
from comfyserve.service import keys
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, Invalid, NotFound
from comfyserve.service.inputs import image_content_type, pixel_cap

HASH_PREFIX = "blake3:"
ASSETS_FOLDER = "assets/"  # inside the tenant's uploads
_HEX = re.compile(r"^[0-9a-f]{64}$")
_ASSET_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_FILE_PATH_CHARS = 255
MAX_TAGS = 32


class AssetRecord(BaseModel):
    id: str
    hash: str = Field(description="blake3:<hex>")
    size_bytes: int
    content_type: str
    file_path: str | None = None
    tags: list[str] = Field(default_factory=list)
    created_at: datetime

    @property
    def hex(self) -> str:
        return self.hash.removeprefix(HASH_PREFIX)


def content_key(tenant: str, hex_digest: str) -> str:
    return f"{keys.uploads_prefix(tenant)}{ASSETS_FOLDER}{hex_digest}"


def _record_key(tenant: str, asset_id: str) -> str:
    return f"assets/{tenant}/{asset_id}.json"


def _marker_prefix(tenant: str, hex_digest: str) -> str:
    return f"assets/{tenant}/by-hash/{hex_digest}/"


def parse_hash(text: str) -> str:
    """The hex digest of a ``blake3:<hex>`` hash; :class:`Invalid` for anything else."""
    hex_digest = text.removeprefix(HASH_PREFIX).lower()
    if not text.startswith(HASH_PREFIX) or not _HEX.match(hex_digest):
        raise Invalid("Invalid hash", type_="invalid_request", details="a hash is 'blake3:' and 64 hex digits")
    return hex_digest


def _check_meta(file_path: str | None, tags: list[str]) -> None:
    if file_path is not None and (len(file_path) > MAX_FILE_PATH_CHARS or not file_path.isprintable()):
        raise Invalid("Invalid file_path", type_="invalid_request", details=f"1-{MAX_FILE_PATH_CHARS} printable chars")
    if len(tags) > MAX_TAGS:
        raise Invalid("Too many tags", type_="invalid_request", details=f"at most {MAX_TAGS}")


def _save(deps: ServiceDeps, tenant: str, record: AssetRecord) -> AssetRecord:
    deps.blobs.put(_record_key(tenant, record.id), record.model_dump_json().encode(), "application/json")
    deps.blobs.put(_marker_prefix(tenant, record.hex) + record.id, b"", "application/octet-stream")
    return record


def _new(
    hex_digest: str, size: int, content_type: str, file_path: str | None, tags: list[str], deps: ServiceDeps
) -> AssetRecord:
    return AssetRecord(
        id=str(uuid.uuid4()),
        hash=HASH_PREFIX + hex_digest,
        size_bytes=size,
        content_type=content_type,
        file_path=file_path,
        tags=tags,
        created_at=deps.clock(),
    )


def create(
    deps: ServiceDeps,
    tenant: str,
    data: bytes,
    content_type: str,
    file_path: str | None,
    expected_hash: str | None = None,
    tags: list[str] | None = None,
) -> tuple[AssetRecord, bool]:
    """A new asset over ``data`` and whether its bytes are new to the tenant; :class:`Conflict`
    (``hash_mismatch``) when ``expected_hash`` is not the bytes' hash, :class:`Invalid` for an ``image/*`` that
    is not a readable image within the pixel cap, with nothing stored."""
    tags = tags or []
    _check_meta(file_path, tags)
    if content_type.startswith("image/"):  # an image a job may load: the input checks' image rules, now
        image_content_type(file_path or "asset", data, pixel_cap(deps))
    hex_digest = blake3(data).hexdigest()
    if expected_hash is not None and parse_hash(expected_hash) != hex_digest:
        raise Conflict("Hash mismatch", type_="hash_mismatch", details=f"the bytes hash to {HASH_PREFIX}{hex_digest}")
    key = content_key(tenant, hex_digest)
    created_new = deps.blobs.head(key) is None
    if created_new:
        deps.blobs.put(key, data, content_type)
    return _save(deps, tenant, _new(hex_digest, len(data), content_type, file_path, tags, deps)), created_new


def exists(deps: ServiceDeps, tenant: str, hash_text: str) -> bool:
    return deps.blobs.head(content_key(tenant, parse_hash(hash_text))) is not None


def from_hash(
    deps: ServiceDeps, tenant: str, hash_text: str, file_path: str | None, tags: list[str] | None = None
) -> AssetRecord:
    """A new asset over bytes the tenant already has; :class:`NotFound` (``blob_not_found``) otherwise."""
    tags = tags or []
    _check_meta(file_path, tags)
    hex_digest = parse_hash(hash_text)
    info = deps.blobs.head(content_key(tenant, hex_digest))
    if info is None:
        raise NotFound("No content with this hash", type_="blob_not_found", details=f"upload {hash_text} first")
    return _save(deps, tenant, _new(hex_digest, info.size, info.content_type, file_path, tags, deps))


def get(deps: ServiceDeps, tenant: str, asset_id: str) -> AssetRecord:
    missing = NotFound("Asset not found", type_="not_found", details=f"no asset {asset_id[:64]!r}")
    if not _ASSET_ID.match(asset_id):
        raise missing
    try:
        return AssetRecord.model_validate_json(deps.blobs.get(_record_key(tenant, asset_id)))
    except (BlobNotFound, ValidationError):
        raise missing from None


def delete(deps: ServiceDeps, tenant: str, asset_id: str) -> None:
    """Remove the asset; its bytes go with the last asset that names them."""
    record = get(deps, tenant, asset_id)
    deps.blobs.delete(_record_key(tenant, asset_id))
    prefix = _marker_prefix(tenant, record.hex)
    deps.blobs.delete(prefix + asset_id)
    if not deps.blobs.list(prefix):
        deps.blobs.delete(content_key(tenant, record.hex))


def view(deps: ServiceDeps, tenant: str, record: AssetRecord, created_new: bool | None = None) -> dict[str, Any]:
    """The v2 asset object, with a presigned URL to its bytes."""
    expiry = deps.settings.presign_expiry_s
    body: dict[str, Any] = {
        "id": record.id,
        "hash": record.hash,
        "size_bytes": record.size_bytes,
        "content_type": record.content_type,
        "file_path": record.file_path,
        "created_at": record.created_at.isoformat(),
        "url": deps.blobs.presigned_get(content_key(tenant, record.hex), expiry),
        "url_expires_at": (deps.clock() + timedelta(seconds=expiry)).isoformat(),
        "expires_at": None,
    }
    if created_new is not None:
        body["created_new"] = created_new
    return body
