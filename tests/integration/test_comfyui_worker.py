"""The worker loop on the ComfyUI backend (a fake ComfyUI child process, tests/unit/fake_comfyui): a job runs to
its outputs and manifest; a ComfyUI that dies under a job is restarted and the job released, then completed once
on its next delivery; the catalog the backend exports is published where the API finds it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.contracts.manifest import manifest_key
from comfyserve.engine.catalog import Catalog
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.service.catalog_source import PublishedCatalog, publish_catalog
from comfyserve.service.completion import Completion
from comfyserve.worker.backend_factory import build_backend
from comfyserve.worker.comfyui import ComfyUIBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from tests.integration.stack_helpers import wait_for

TENANT = "acme"
FAKE_DIR = Path(__file__).parents[1] / "unit" / "fake_comfyui"


@pytest.fixture
def adapters(tmp_path: Path) -> Iterator[LocalAdapters]:
    adapters = LocalAdapters.open(tmp_path / "data", "http://127.0.0.1:9")
    adapters.blobs.on_created(Completion(adapters.store, adapters.bus, adapters.blobs).on_object_created)
    yield adapters
    adapters.close()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ComfyUIBackend]:
    backend = build_backend("comfyui", comfyui_dir=FAKE_DIR, work_dir=tmp_path / "comfyui", ready_timeout_s=30)
    assert isinstance(backend, ComfyUIBackend)
    backend.start()
    yield backend
    backend.close()


def workflow(mode: str) -> dict[str, Any]:
    return {
        "2": {"class_type": "FakeGenerate", "inputs": {"mode": mode, "steps": 2}},
        "3": {"class_type": "FakeSave", "inputs": {"images": ["2", 0], "filename_prefix": "ComfyUI"}},
    }


def enqueue(adapters: LocalAdapters, prompt: dict[str, Any]) -> JobRecord:
    record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow=prompt)
    adapters.store.create(record)
    adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
    return record


def worker(adapters: LocalAdapters, backend: ComfyUIBackend) -> Worker:
    settings = WorkerSettings(work_dir=adapters.work_dir, receive_wait_s=0, visibility_timeout_s=30)
    return Worker(WorkerPorts(adapters.blobs, adapters.queue, adapters.store, adapters.bus), backend, settings)


def test_a_job_runs_on_comfyui_to_its_outputs(adapters: LocalAdapters, backend: ComfyUIBackend) -> None:
    record = enqueue(adapters, workflow("ok"))
    assert wait_for(worker(adapters, backend).poll, what="a message") == [Outcome.SUCCEEDED]
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED
    key = f"outputs/{TENANT}/{record.job_id}/ComfyUI_00001_.png"
    assert [o.key for o in final.outputs] == [key]
    assert adapters.blobs.get(key).startswith(b"\x89PNG")
    assert set(final.timings.per_node) == {"2", "3"}


def test_a_comfyui_crash_releases_the_job_which_then_completes_once(
    adapters: LocalAdapters, backend: ComfyUIBackend
) -> None:
    record = enqueue(adapters, workflow("crash_once"))
    loop = worker(adapters, backend)
    pid = backend.process.pid
    assert wait_for(loop.poll, what="a message") == [Outcome.RELEASED]
    released = adapters.store.get_by_id(record.job_id)
    assert released is not None and released.status is JobStatus.QUEUED
    assert adapters.blobs.head(manifest_key(TENANT, record.job_id)) is None
    assert backend.process.alive() and backend.process.pid != pid

    assert wait_for(loop.poll, what="the released message") == [Outcome.SUCCEEDED]
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 2
    assert [o.filename for o in final.outputs] == ["ComfyUI_00001_.png"]
    lifecycle = [e.type for e in adapters.bus.events(record.job_id) if e.type is not JobEventType.JOB_PROGRESS]
    assert lifecycle.count(JobEventType.JOB_SUCCEEDED) == 1
    assert adapters.queue.approximate_depth().total == 0


def test_a_node_error_fails_the_job_with_comfyuis_message(adapters: LocalAdapters, backend: ComfyUIBackend) -> None:
    record = enqueue(adapters, workflow("error"))
    assert wait_for(worker(adapters, backend).poll, what="a message") == [Outcome.FAILED]
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.error is not None
    assert (final.error.type, final.error.message, final.error.node_id) == (
        "execution_error",
        "RuntimeError: boom",
        "2",
    )


def test_the_published_catalog_is_the_one_the_api_validates_against(
    adapters: LocalAdapters, backend: ComfyUIBackend
) -> None:
    live = PublishedCatalog(adapters.blobs, Catalog.packaged(), refresh_s=0.0)
    assert "FakeSave" not in live.specs
    publish_catalog(adapters.blobs, backend.object_info())
    assert sorted(live.specs) == ["FakeGenerate", "FakeLoad", "FakeSave"]
