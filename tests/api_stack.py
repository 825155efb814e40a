"""The job service and its route table over the local adapters in a temporary directory, for API tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
from comfyserve.adapters.local.sqlite_queue import SqliteJobQueue
from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiKeyAuthenticator
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.registry import NodeRegistry
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.settings import ServiceSettings
from tests.apigw import ApiResponse, read_response, rest_event
from tests.unit import validation_nodes

KEYS = {"tenant-a": "key-a-0123456789", "tenant-b": "key-b-0123456789"}


def test_catalog() -> Catalog:
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

    def call(
        self, method: str, url: str, *, tenant: str | None = "tenant-a", headers: dict[str, str] | None = None, **kw: Any
    ) -> ApiResponse:
        all_headers = {"x-api-key": KEYS[tenant]} if tenant else {}
        all_headers.update(headers or {})
        return read_response(self.app.resolve(rest_event(method, url, headers=all_headers, **kw), None))

    def nothing_recorded(self) -> bool:
        return (
            self.queue.approximate_depth().total == 0
            and all(not self.jobs.list(tenant)[0] for tenant in KEYS)
            and not self.events.events()
            and not self.blobs.list()
        )


def make_stack(root: Path, **settings: Any) -> Stack:
    blobs = LocalBlobStore(root / "blobs", BlobUrlSigner("http://127.0.0.1:8188", b"test-secret"))
    queue = SqliteJobQueue(root / "queue.sqlite")
    jobs = SqliteJobStore(root / "jobs.sqlite")
    events = JsonlEventBus(root / "events.jsonl")
    deps = ServiceDeps(
        blobs=blobs,
        queue=queue,
        jobs=jobs,
        events=events,
        catalog=test_catalog(),
        settings=ServiceSettings(**settings),
    )
    service = JobService(deps)
    auth = ApiKeyAuthenticator({key: tenant for tenant, key in KEYS.items()})
    return Stack(service, build_app(service, auth), blobs, queue, jobs, events)
