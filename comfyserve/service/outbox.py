"""The drop folder's outbox: what a dropped request's submitter finds under ``outbox/{prefix}/{name}/`` of the
inbox bucket — ``job.json`` once the job is queued, its outputs and ``result.json`` when it ends, or
``error.json`` when the file was refused.

Results are copied by a subscriber of the job events (the terminal event carries the outputs and the job's
``drop_folder`` metadata), not by the completion use case, which stays the single writer of job state. The
copy is idempotent (same keys, same bytes), so a redelivered event changes nothing. The inbox rule matches
``inbox/`` only, so nothing written here starts a job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.ports import BlobStore, InvalidKey, validate_key

log = logging.getLogger(__name__)

INBOX = "inbox/"
OUTBOX = "outbox/"
DROP_META_KEY = "drop_folder"
TERMINAL_TYPES = frozenset({JobEventType.JOB_SUCCEEDED, JobEventType.JOB_FAILED, JobEventType.JOB_CANCELLED})


class TenantMap:
    """Drop-folder prefix → tenant, from ``"prefix:tenant,…"``; empty: every prefix is its own tenant."""

    def __init__(self, spec: str = "") -> None:
        self._map: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            prefix, sep, tenant = item.partition(":")
            if not sep or not prefix.strip() or not tenant.strip():
                raise ValueError(f'COMFYSERVE_DROP_TENANTS: expected "prefix:tenant" items, got {item!r}')
            self._map[prefix.strip()] = tenant.strip()

    def tenant_of(self, prefix: str) -> str | None:
        return self._map.get(prefix) if self._map else prefix


class DropMeta(BaseModel):
    """What the drop folder records under ``metadata["drop_folder"]`` of the jobs it submits."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prefix: str
    name: str
    key: str

    @classmethod
    def of(cls, metadata: Mapping[str, JsonValue]) -> DropMeta | None:
        raw = metadata.get(DROP_META_KEY)
        try:
            return cls.model_validate(raw) if isinstance(raw, dict) else None
        except ValidationError:
            return None

    @property
    def folder(self) -> str:
        return outbox_folder(self.prefix, self.name)


def outbox_folder(prefix: str, name: str) -> str:
    return f"{OUTBOX}{prefix}/{name}/"


def write_json(inbox: BlobStore, key: str, document: Mapping[str, Any]) -> None:
    inbox.put(key, json.dumps(document, indent=2, default=str).encode(), "application/json")


@dataclass(frozen=True)
class Delivered:
    folder: str
    keys: list[str]


class Outbox:
    """Copies a finished drop-folder job's outputs from the jobs bucket into the inbox bucket's outbox."""

    def __init__(self, jobs_blobs: BlobStore, inbox: BlobStore, tenants: TenantMap) -> None:
        self._blobs = jobs_blobs
        self._inbox = inbox
        self._tenants = tenants

    def on_job_event(self, event: JobEvent) -> Delivered | None:
        """``None`` for events that are not the end of a drop-folder job (or name another tenant's folder)."""
        meta = DropMeta.of(event.metadata)
        if event.type not in TERMINAL_TYPES or meta is None:
            return None
        if self._tenants.tenant_of(meta.prefix) != event.tenant:
            log.warning("job %s of %s names drop folder %r of another tenant", event.job_id, event.tenant, meta.prefix)
            return None
        written: list[str] = []
        outputs = []
        for ref in event.outputs:
            key = self._key(meta.folder + ref.filename)
            if key is None:
                log.warning("output %r of job %s has no outbox name", ref.filename, event.job_id)
                continue
            self._inbox.put(key, self._blobs.get(ref.key), ref.content_type)
            written.append(key)
            outputs.append({"node_id": ref.node_id, "filename": ref.filename, "key": key, "size": ref.size})
        result_name = "result.json" if event.type is JobEventType.JOB_SUCCEEDED else "error.json"
        document = {
            "job_id": event.job_id,
            "status": event.status.value,
            "source": meta.key,
            "outputs": outputs,
            "error": event.error.model_dump() if event.error else None,
            "timings": event.timings.model_dump(exclude_defaults=True),
        }
        write_json(self._inbox, meta.folder + result_name, document)
        return Delivered(meta.folder, [*written, meta.folder + result_name])

    @staticmethod
    def _key(key: str) -> str | None:
        try:
            return validate_key(key)
        except InvalidKey:
            return None
