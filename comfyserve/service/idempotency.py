"""Idempotency-Key: the same key with the same body returns the original job; with another body, 409."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from comfyserve.contracts.jobs import JobRecord
from comfyserve.service.errors import Conflict, Invalid

MAX_KEY_LENGTH = 256


def check_key(key: str | None) -> str | None:
    """The key as given, or :class:`Invalid` when it is empty, too long or not printable ASCII."""
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise Invalid(
            "Invalid Idempotency-Key header",
            type_="invalid_idempotency_key",
            details=f"a key is 1-{MAX_KEY_LENGTH} printable ASCII characters",
        )
    return key


def body_hash(document: Any) -> str:
    """A hash of the request's JSON that ignores key order and whitespace."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay(holder: JobRecord | None, key: str, digest: str | None) -> JobRecord:
    """The job that holds ``key`` if it was created from the same body; :class:`Conflict` otherwise."""
    if holder is None or holder.body_hash != digest:
        raise Conflict(
            "Idempotency-Key reused with a different request",
            type_="idempotency_key_reused",
            details=f"the key {key!r} was first used for another request body"
            + (f" (job {holder.job_id})" if holder else ""),
            extra_info={"job_id": holder.job_id} if holder else {},
        )
    return holder
