"""Where the service puts things in the blob store. Keys are deterministic per job, so a retried write
overwrites instead of adding, and every key starts with a tenant folder."""

from __future__ import annotations

import hashlib


def workflow_key(tenant: str, job_id: str) -> str:
    return f"workflows/{tenant}/{job_id}/prompt.json"


def extra_data_key(tenant: str, job_id: str) -> str:
    return f"workflows/{tenant}/{job_id}/extra_data.json"


def input_key(tenant: str, job_id: str, name: str) -> str:
    """An input's key names it by hash: input names are any string, keys must stay portable."""
    return f"inputs/{tenant}/{job_id}/{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def uploads_prefix(tenant: str) -> str:
    return f"uploads/{tenant}/"


def hidden_history_key(tenant: str) -> str:
    """What ``POST /history`` removed from the tenant's ComfyUI history."""
    return f"history/{tenant}/hidden.json"
