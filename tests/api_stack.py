"""The job service and its route table over the local adapters in a temporary directory, for API tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
from comfyserve.adapters.local.sqlite_queue import SqliteJobQueue
from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiKeyAuthenticator
from comfyserve.contracts.jobs import JobError, JobStatus, OutputRef
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.registry import NodeRegistry
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.settings import ServiceSettings
from tests.apigw import ApiResponse, resolve, rest_event
from tests.unit import validation_nodes

KEYS = {"tenant-a": "key-a-0123456789", "tenant-b": "key-b-0123456789"}


def tiny_catalog() -> Catalog:
    registry = NodeRegistry()
    registry.load_module(validation_nodes)
    return Catalog.from_registry(registry)


def workflow(**inputs: Any) -> dict[str, Any]:
    """A valid graph of the validation test pack: Loader → Sampler → Save."""
    sampler = {
        "model": ["4", 0],
        "seed": 5,
        "steps": 20,
        "cfg": 8,
        "sampler_name": "euler",
        "scheduler": "normal",
        "width": 512,
        "height": 512,
        **inputs,
    }
    return {
        "4": {"class_type": "Loader", "inputs": {"ckpt_name": "v1-5.safetensors"}},
        "3": {"class_type": "Sampler", "inputs": sampler},
        "9": {"class_type": "Save", "inputs": {"images": ["3", 0], "filename_prefix": "ComfyUI"}},
    }


@dataclass
class Stack:
    service: JobService
    app: APIGatewayRestResolver
    blobs: LocalBlobStore
    queue: SqliteJobQueue
    jobs: SqliteJobStore
    events: JsonlEventBus
    auth: ApiKeyAuthenticator

    def new_app(self) -> APIGatewayRestResolver:
        """Another route table over the same service (the local server builds one per concurrent request)."""
        return build_app(self.service, self.auth)

    def call(
        self,
        method: str,
        url: str,
        *,
        tenant: str | None = "tenant-a",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> ApiResponse:
        all_headers = {"x-api-key": KEYS[tenant]} if tenant else {}
        all_headers.update(headers or {})
        return resolve(self.app, rest_event(method, url, headers=all_headers, **kw))

    def nothing_recorded(self) -> bool:
        return (
            self.queue.approximate_depth().total == 0
            and all(not self.jobs.list(tenant)[0] for tenant in KEYS)
            and not self.events.events()
            and not self.blobs.list()
        )


def make_stack(root: Path, catalog: Catalog | None = None, **settings: Any) -> Stack:
    blobs = LocalBlobStore(root / "blobs", BlobUrlSigner("http://127.0.0.1:8188", b"test-secret"))
    queue = SqliteJobQueue(root / "queue.sqlite")
    jobs = SqliteJobStore(root / "jobs.sqlite")
    events = JsonlEventBus(root / "events.jsonl")
    deps = ServiceDeps(
        blobs=blobs,
        queue=queue,
        jobs=jobs,
        events=events,
        catalog=catalog or tiny_catalog(),
        settings=ServiceSettings(**settings),
    )
    service = JobService(deps)
    auth = ApiKeyAuthenticator({key: tenant for tenant, key in KEYS.items()})
    return Stack(service, build_app(service, auth), blobs, queue, jobs, events, auth)


def error_body(type_: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exact body of an error response."""
    return {
        "error": {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}},
        "node_errors": {},
    }


def run_job(
    stack: Stack, job_id: str, *, outputs: list[OutputRef] | None = None, error: JobError | None = None
) -> None:
    """Play the worker: claim the job, then finish it with ``outputs`` (written to blobs) or ``error``."""
    now = datetime.now(UTC)
    stack.jobs.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING, started_at=now, attempts=1)
    if outputs is None and error is None:
        return
    for ref in outputs or []:
        stack.blobs.put(ref.key, b"\x89PNG\r\n\x1a\n" + b"0" * (ref.size - 8), ref.content_type)
    status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
    stack.jobs.transition(job_id, {JobStatus.RUNNING}, status, finished_at=now, outputs=outputs or [], error=error)


def output_ref(tenant: str, job_id: str, filename: str = "ComfyUI_00001_.png", size: int = 64) -> OutputRef:
    return OutputRef(
        node_id="9",
        key=f"outputs/{tenant}/{job_id}/{filename}",
        filename=filename,
        content_type="image/png",
        size=size,
    )
