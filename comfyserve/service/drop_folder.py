"""The drop folder: a request JSON (the ``POST /v1/jobs`` body) or a bare API-format workflow dropped at
``inbox/{prefix}/{name}.json`` of the inbox bucket becomes a job through the job service's own submit path.

* Tenant: the first folder, mapped like API keys (``COMFYSERVE_DROP_TENANTS``, "prefix:tenant,…"; unset:
  the folder name is the tenant).
* Inputs: a workflow value that names a file beside the JSON (``cat.png``, ``refs/cat.png``) becomes that
  job input, read from the inbox; drop the images first, the JSON last.
* Idempotency: the key is derived from the object's key and version id (or ETag), so a duplicated S3 event
  makes one job; a new upload of the same name is a new version, hence a new job.
* Answers land in ``outbox/{prefix}/{name}/`` (comfyserve.service.outbox): ``job.json`` when queued,
  ``error.json`` (the API's error body) when refused — nothing is enqueued then. Temporary failures (a full
  backlog, an unavailable queue) raise, so the invocation is retried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError

from comfyserve.contracts.jobs import TENANT_PATTERN
from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.ports import BlobNotFound, BlobStore, InvalidKey, validate_key
from comfyserve.service import ui_workflows
from comfyserve.service.errors import Busy, Conflict, Invalid, ServiceError, TooLarge, Unavailable
from comfyserve.service.job_service import JobService
from comfyserve.service.models import InputSource, JobSubmission
from comfyserve.service.outbox import DROP_META_KEY, INBOX, DropMeta, TenantMap, outbox_folder, write_json
from comfyserve.service.validate import parse_workflow
from comfyserve.settings import EnvSettings

log = logging.getLogger(__name__)

REQUEST_SUFFIX = ".json"
Outcome = Literal["submitted", "duplicate", "refused", "ignored"]


class DropFolderSettings(EnvSettings):
    """The ``drop_folder`` Lambda: which inbox folders belong to which tenant."""

    doc_title = "Drop folder (the `drop_folder` Lambda)"

    drop_tenants: str = Field(
        default="", description='drop-folder prefix -> tenant, "prefix:tenant,…" (unset: the prefix is the tenant)'
    )

    def tenant_map(self) -> TenantMap:
        return TenantMap(self.drop_tenants)


@dataclass(frozen=True)
class DropPath:
    """``inbox/{prefix}/{name}.json``; ``directory`` is where its input files are looked up."""

    key: str
    prefix: str
    name: str

    @classmethod
    def parse(cls, key: str) -> DropPath | None:
        if not key.startswith(INBOX) or not key.endswith(REQUEST_SUFFIX):
            return None
        try:
            validate_key(key)
        except InvalidKey:
            return None
        prefix, sep, rest = key[len(INBOX) :].partition("/")
        name = rest[: -len(REQUEST_SUFFIX)]
        if not prefix or not sep or not name or name.endswith("/"):
            return None
        return cls(key, prefix, name)

    @property
    def directory(self) -> str:
        return self.key.rpartition("/")[0] + "/"

    @property
    def outbox(self) -> str:
        return outbox_folder(self.prefix, self.name)


@dataclass(frozen=True)
class DropResult:
    outcome: Outcome
    job_id: str | None = None
    error: dict[str, Any] | None = None


def idempotency_key(key: str, version: str) -> str:
    """Printable and bounded whatever the object key: a hash of key and version."""
    return "drop-" + hashlib.sha256(f"{key}\n{version}".encode()).hexdigest()[:48]


class DropFolder:
    def __init__(self, service: JobService, inbox: BlobStore, tenants: TenantMap) -> None:
        self._service = service
        self._inbox = inbox
        self._tenants = tenants

    def on_object_created(self, key: str, version: str, size: int | None = None) -> DropResult:
        """Submit the request at ``key`` (``version``: its version id, else its ETag; ``size`` from the event)."""
        path = DropPath.parse(key)
        if path is None:
            return DropResult("ignored")  # an input image, or not in a tenant's folder
        limit = self._service.settings.max_body_bytes
        if size is not None and size > limit:
            too_large = TooLarge("Request too large", type_="request_too_large", details=f"over {limit} bytes")
            return self._refuse(path, too_large)
        try:
            data = self._inbox.get(key)
        except BlobNotFound:
            log.warning("drop %s is gone; nothing to submit", key)
            return DropResult("ignored")
        try:
            tenant = self._tenant(path)
            request = self._request(path, data)
            submitted = self._service.submit(tenant, request, idempotency_key(key, version))
        except (Busy, Unavailable):
            raise  # temporary: the invocation is retried
        except Conflict as exc:
            if exc.type != "idempotency_key_reused":
                return self._refuse(path, exc)
            # The same object version with other input files beside it: the first job stands.
            return DropResult("duplicate", job_id=exc.extra_info.get("job_id"))
        except ServiceError as exc:
            return self._refuse(path, exc)
        record = submitted.record
        document = {"job_id": record.job_id, "status": record.status.value, "source": key}
        write_json(self._inbox, path.outbox + "job.json", document)
        return DropResult("duplicate" if submitted.replayed else "submitted", job_id=record.job_id)

    def _tenant(self, path: DropPath) -> str:
        tenant = self._tenants.tenant_of(path.prefix)
        if tenant is None or not re.fullmatch(TENANT_PATTERN, tenant):
            raise Invalid("Unknown drop folder", type_="unknown_tenant", details=f"{path.prefix!r} is no tenant's")
        return tenant

    def _request(self, path: DropPath, data: bytes) -> JobSubmission:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Invalid("Invalid JSON", type_="invalid_json", details=str(exc)) from None
        is_request = isinstance(document, dict) and ("workflow" in document or "workflow_key" in document)
        try:
            request = JobSubmission.model_validate(document if is_request else {"workflow": document})
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise Invalid("Invalid job request", type_="invalid_request", details=details) from None
        request = request.model_copy(update={"workflow": ui_workflows.api_prompt(self._service.deps, request.workflow)})
        inputs = {**self._beside(path, request), **request.inputs}
        meta = DropMeta(prefix=path.prefix, name=path.name, key=path.key)
        metadata = {**request.metadata, DROP_META_KEY: meta.model_dump()}
        return request.model_copy(update={"inputs": inputs, "metadata": metadata})

    def _beside(self, path: DropPath, request: JobSubmission) -> dict[str, InputSource]:
        """The workflow's string values that name a file beside the request, as base64 inputs."""
        if request.workflow is None:
            return {}
        try:
            nodes = parse_workflow(request.workflow)
        except WorkflowFormatError:
            return {}  # validation reports it
        values = {
            value
            for node in nodes.values()
            if isinstance(node, dict) and isinstance(node.get("inputs"), dict)
            for value in node["inputs"].values()
            if isinstance(value, str) and not value.endswith(REQUEST_SUFFIX)
        }
        if not values:
            return {}
        beside = {key[len(path.directory) :] for key in self._inbox.list(path.directory)}
        limit = self._service.settings.max_inline_input_bytes
        inputs: dict[str, InputSource] = {}
        for name in sorted(values & beside):
            info = self._inbox.head(path.directory + name)
            if info is None:
                continue
            if info.size > limit:
                raise TooLarge(
                    "Input too large", type_="input_too_large", details=f"input {name!r} is over {limit} bytes"
                )
            data = self._inbox.get(path.directory + name)
            # S3 often stores an upload as binary/octet-stream: then the service sniffs the type.
            content_type = info.content_type if info.content_type.startswith("image/") else None
            inputs[name] = InputSource(base64=base64.b64encode(data).decode(), content_type=content_type)
        return inputs

    def _refuse(self, path: DropPath, error: ServiceError) -> DropResult:
        body = {"source": path.key, **error.body()}
        write_json(self._inbox, path.outbox + "error.json", body)
        log.info("drop %s refused: %s", path.key, error)
        return DropResult("refused", error=body["error"])
