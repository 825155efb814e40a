"""The opaque list cursor both job stores issue: the last returned job's order key, bound to tenant and filter."""

from __future__ import annotations

import base64
import binascii
import json

from comfyserve.contracts.jobs import JobStatus
from comfyserve.ports import InvalidCursor


def encode_cursor(tenant: str, status: JobStatus | None, order_key: str) -> str:
    payload = json.dumps({"t": tenant, "s": status.value if status else None, "k": order_key})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, tenant: str, status: JobStatus | None) -> str:
    """The order key to continue after; :class:`InvalidCursor` unless issued for this tenant and filter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor() from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("k"), str) or "#" not in payload["k"]:
        raise InvalidCursor()
    if payload.get("t") != tenant or payload.get("s") != (status.value if status else None):
        raise InvalidCursor()
    return str(payload["k"])
