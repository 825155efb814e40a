"""The worker loop against the real local adapters (SQLite queue and store, blob directory, event log), in
process: claims, exactly-once effects under redelivery, heartbeat loss, cancellation, timeouts, drain, scale-in
protection. The blob store's "object created" signal runs the completion use case, as in the local stack."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import InputRef, JobRecord, JobStatus, OutputOptions, QueueMessage
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.engine.registry import NodeRegistry, build_registry
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.ports import BlobInfo, ReceivedMessage
from comfyserve.service.completion import Completion
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.protection import ScaleInProtection
from comfyserve.worker.telemetry import LOGGER_NAME, WorkerTelemetry, summarize, worker_logger
from tests.integration.stack_helpers import IMAGE_PACKS, STACK_NODES, fail_workflow, wait_for, wait_workflow

TENANT = "acme"
BASE_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_registry(IMAGE_PACKS, custom_nodes=[STACK_NODES])


@pytest.fixture
def stack_adapters(tmp_path: Path) -> Iterator[LocalAdapters]:
    adapters = LocalAdapters.open(tmp_path, BASE_URL)
    adapters.blobs.on_created(Completion(adapters.store, adapters.bus, adapters.blobs).on_object_created)
    yield adapters
    adapters.close()


def make_worker(
    adapters: LocalAdapters,
    registry: NodeRegistry,
    *,
    blobs: Any = None,
    store: Any = None,
    queue: Any = None,
    protection: ScaleInProtection | None = None,
    **settings: Any,
) -> Worker:
    """A worker on ``adapters``, with any of its blob store, job store or queue replaced by a wrapper."""
    options: dict[str, Any] = {"receive_wait_s": 0, "visibility_timeout_s": 30, **settings}
    ports = WorkerPorts(blobs or adapters.blobs, queue or adapters.queue, store or adapters.store, adapters.bus)
    settings_ = WorkerSettings(work_dir=adapters.work_dir, **options)
    return Worker(ports, BuiltinBackend(registry), settings_, protection=protection)


def enqueue(adapters: LocalAdapters, workflow: dict[str, Any], **fields: Any) -> JobRecord:
    record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow=workflow, **fields)
    adapters.store.create(record)
    adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
    return record


def status(adapters: LocalAdapters, job_id: str) -> JobStatus:
    record = adapters.store.get_by_id(job_id)
    assert record is not None
    return record.status


def event_types(adapters: LocalAdapters, job_id: str) -> list[JobEventType]:
    """The job's lifecycle events (throttled progress events left out), oldest first."""
    return [e.type for e in adapters.bus.events(job_id) if e.type is not JobEventType.JOB_PROGRESS]


def poll_until_processed(worker: Worker, timeout_s: float = 20.0) -> list[Outcome]:
    return wait_for(worker.poll, timeout_s, "a message to process")


def in_thread(target: Any) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(target()))
    thread.start()
    return thread, results


def running(adapters: LocalAdapters, job_id: str) -> bool:
    return status(adapters, job_id) is JobStatus.RUNNING


class RecordingBlobs:
    """The local blob store, remembering the order of its puts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> BlobInfo:
        self.puts.append(key)
        info: BlobInfo = self.inner.put(key, data, content_type)
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CrashingQueue:
    """The local queue, whose acknowledgement 'crashes' the worker (after the job's manifest is written)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def delete(self, receipt: str) -> None:
        raise RuntimeError("worker crashed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CapturingQueue:
    """The local queue, keeping every message it hands out (so a test can pull the rug from a worker)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.received: list[ReceivedMessage] = []

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        messages: list[ReceivedMessage] = self.inner.receive(max_messages, visibility_timeout_s, wait_s)
        self.received += messages
        return messages

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_job_runs_uploads_outputs_then_manifest_and_acknowledges(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    recording = RecordingBlobs(stack_adapters.blobs)
    worker = make_worker(stack_adapters, registry, blobs=recording)
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1, prefix="sub/out"))

    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]

    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 1
    expected_key = f"outputs/{TENANT}/{record.job_id}/sub/out_00001_.png"
    assert [(o.key, o.filename, o.node_id, o.content_type) for o in final.outputs] == [
        (expected_key, "sub/out_00001_.png", "3", "image/png")
    ]
    assert recording.puts == [expected_key, manifest_key(TENANT, record.job_id)]
    assert stack_adapters.blobs.get(expected_key).startswith(b"\x89PNG")
    assert final.timings.execution_s is not None and set(final.timings.per_node) == {"1", "2", "3"}
    assert final.progress is not None and final.progress.nodes_done == final.progress.nodes_total == 3
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_SUCCEEDED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_duplicate_message_after_success_changes_nothing(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    worker = make_worker(stack_adapters, registry)
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]
    before = stack_adapters.store.get_by_id(record.job_id)
    keys = stack_adapters.blobs.list(f"outputs/{TENANT}/{record.job_id}/")

    stack_adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
    assert poll_until_processed(worker) == [Outcome.SKIPPED]

    assert stack_adapters.store.get_by_id(record.job_id) == before
    assert stack_adapters.blobs.list(f"outputs/{TENANT}/{record.job_id}/") == keys
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_SUCCEEDED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_message_received_twice_at_once_runs_the_job_once(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    first, second = make_worker(stack_adapters, registry), make_worker(stack_adapters, registry)
    record = enqueue(stack_adapters, wait_workflow(0.6, steps=6))
    stack_adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))  # a duplicate send

    thread, outcomes = in_thread(lambda: poll_until_processed(first))
    wait_for(lambda: running(stack_adapters, record.job_id), what="the first worker's claim")
    assert poll_until_processed(second) == [Outcome.SKIPPED]
    thread.join()

    assert outcomes == [[Outcome.SUCCEEDED]]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.attempts == 1
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_SUCCEEDED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_crash_after_the_manifest_leaves_one_completion_and_the_redelivery_changes_nothing(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    crashing = make_worker(stack_adapters, registry, queue=CrashingQueue(stack_adapters.queue), visibility_timeout_s=1)
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    with pytest.raises(RuntimeError, match="worker crashed"):
        crashing.poll()
    prefix = f"outputs/{TENANT}/{record.job_id}/"
    keys_after_crash = stack_adapters.blobs.list(prefix)
    assert status(stack_adapters, record.job_id) is JobStatus.SUCCEEDED  # completed from the manifest

    rescuer = make_worker(stack_adapters, registry)
    assert poll_until_processed(rescuer, timeout_s=10) == [Outcome.SKIPPED]  # after the visibility runs out

    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 1
    assert stack_adapters.blobs.list(prefix) == keys_after_crash
    assert sorted(o.key for o in final.outputs) == [k for k in keys_after_crash if not k.endswith("manifest.json")]
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_SUCCEEDED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_redelivered_job_whose_manifest_exists_is_completed_from_it_not_run_again(
    stack_adapters: LocalAdapters, registry: NodeRegistry, tmp_path: Path
) -> None:
    """As in the cloud when the worker crashed after its manifest and before the completion Lambda ran."""
    from comfyserve.adapters.local.blobs import LocalBlobStore

    silent = LocalBlobStore(tmp_path / "silent-blobs", stack_adapters.blobs.signer)  # no "object created" listener
    crashing = make_worker(
        stack_adapters, registry, blobs=silent, queue=CrashingQueue(stack_adapters.queue), visibility_timeout_s=1
    )
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    with pytest.raises(RuntimeError, match="worker crashed"):
        crashing.poll()
    assert status(stack_adapters, record.job_id) is JobStatus.RUNNING

    rescuer = make_worker(stack_adapters, registry, blobs=silent)
    assert poll_until_processed(rescuer, timeout_s=10) == [Outcome.SKIPPED]

    final = stack_adapters.store.get_by_id(record.job_id)
    manifest = JobManifest.model_validate_json(silent.get(manifest_key(TENANT, record.job_id)))
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 1
    assert final.outputs == manifest.outputs and final.final_event == "published"
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_SUCCEEDED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_worker_that_loses_its_message_stops_without_writing(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    queue = CapturingQueue(stack_adapters.queue)
    loser = make_worker(stack_adapters, registry, queue=queue, visibility_timeout_s=1)
    record = enqueue(stack_adapters, wait_workflow(1.5, steps=30))
    thread, outcomes = in_thread(lambda: poll_until_processed(loser))
    wait_for(lambda: running(stack_adapters, record.job_id), what="the claim")

    stack_adapters.queue.release(queue.received[0].receipt)  # as if its visibility had run out
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.SUCCEEDED]
    thread.join()

    assert outcomes == [[Outcome.LOST]]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED and final.attempts == 2
    assert event_types(stack_adapters, record.job_id).count(JobEventType.JOB_SUCCEEDED) == 1
    assert stack_adapters.queue.approximate_depth().total == 0


def test_cancel_requested_interrupts_a_running_job(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    worker = make_worker(stack_adapters, registry, progress_interval_s=0.2)
    record = enqueue(stack_adapters, wait_workflow(20.0, steps=200))
    thread, outcomes = in_thread(lambda: poll_until_processed(worker))
    wait_for(lambda: running(stack_adapters, record.job_id), what="the claim")

    asked = time.monotonic()
    stack_adapters.store.set_fields(record.job_id, when_status={JobStatus.RUNNING}, cancel_requested=True)
    thread.join(timeout=5)

    assert outcomes == [[Outcome.CANCELLED]]
    assert time.monotonic() - asked < 3
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.outputs == []
    types = event_types(stack_adapters, record.job_id)
    assert types[0] is JobEventType.JOB_STARTED and types[-1] is JobEventType.JOB_CANCELLED
    assert stack_adapters.queue.approximate_depth().total == 0


def test_progress_is_written_and_published_at_most_every_interval(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    worker = make_worker(stack_adapters, registry, progress_interval_s=0.25)
    record = enqueue(stack_adapters, wait_workflow(1.0, steps=20))
    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]

    progress = [e.progress for e in stack_adapters.bus.events(record.job_id) if e.type is JobEventType.JOB_PROGRESS]
    assert 2 <= len(progress) <= 5  # 20 steps over one second, throttled to one update per 0.25 s
    assert all(p is not None and p.node == "2" and p.max == 20 and p.nodes_total == 3 for p in progress)
    steps = [p.step for p in progress if p is not None]
    assert steps == sorted(set(steps))  # strictly increasing: one write per interval, never a stale step


def test_cancelled_queued_jobs_are_dropped_without_running(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    worker = make_worker(stack_adapters, registry)
    cancelled = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    stack_adapters.store.transition(cancelled.job_id, {JobStatus.QUEUED}, JobStatus.CANCELLED)
    flagged = enqueue(stack_adapters, wait_workflow(0.0, steps=1), cancel_requested=True)

    assert poll_until_processed(worker) + poll_until_processed(worker) == [Outcome.SKIPPED, Outcome.SKIPPED]

    assert status(stack_adapters, flagged.job_id) is JobStatus.CANCELLED
    assert event_types(stack_adapters, cancelled.job_id) == []
    assert event_types(stack_adapters, flagged.job_id) == [JobEventType.JOB_CANCELLED]
    assert stack_adapters.blobs.list("outputs/") == []
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_message_for_an_unknown_job_is_deleted(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    stack_adapters.queue.send(QueueMessage(job_id="no-such-job", tenant=TENANT))
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.SKIPPED]
    assert stack_adapters.queue.approximate_depth().total == 0


def test_a_job_past_its_timeout_fails(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    record = enqueue(stack_adapters, wait_workflow(10.0, steps=100), timeout_s=1)
    started = time.monotonic()
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.FAILED]
    assert time.monotonic() - started < 4
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.error is not None
    assert (final.error.type, final.error.message) == ("timeout", "the job ran longer than its timeout of 1 s")


@pytest.mark.parametrize("own_timeout_s", [None, 60])
def test_the_worker_caps_a_jobs_timeout(
    stack_adapters: LocalAdapters, registry: NodeRegistry, own_timeout_s: int | None
) -> None:
    record = enqueue(stack_adapters, wait_workflow(10.0, steps=100), timeout_s=own_timeout_s)
    started = time.monotonic()
    assert poll_until_processed(make_worker(stack_adapters, registry, job_timeout_s=1)) == [Outcome.FAILED]
    assert time.monotonic() - started < 4
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert (final.error.type, final.error.message) == ("timeout", "the job ran longer than its timeout of 1 s")
    assert final.timeout_s == own_timeout_s  # the record keeps what the client asked for


def test_a_failing_node_fails_the_job_with_its_error(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    record = enqueue(stack_adapters, fail_workflow("the node broke"))
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.FAILED]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.error is not None
    assert final.error.model_dump() == {
        "type": "ValueError",
        "message": "the node broke",
        "node_id": "2",
        "node_type": "StackTestFail",
    }
    assert event_types(stack_adapters, record.job_id) == [JobEventType.JOB_STARTED, JobEventType.JOB_FAILED]
    manifest = JobManifest.model_validate_json(stack_adapters.blobs.get(manifest_key(TENANT, record.job_id)))
    assert (manifest.status, manifest.error) == ("failed", final.error)


def test_a_workflow_the_worker_finds_invalid_fails_with_the_validation_error(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    record = enqueue(stack_adapters, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.FAILED]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None and final.error is not None
    assert final.error.type == "invalid_prompt"
    assert "NoSuchNode" in final.error.message


@pytest.mark.parametrize(("fmt", "magic", "suffix"), [("webp", b"RIFF", ".webp"), ("jpeg", b"\xff\xd8\xff", ".jpg")])
def test_outputs_are_reencoded_as_the_job_asks(
    stack_adapters: LocalAdapters, registry: NodeRegistry, fmt: str, magic: bytes, suffix: str
) -> None:
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1), output=OutputOptions(format=fmt, quality=70))  # type: ignore[arg-type]
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.SUCCEEDED]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None
    (output,) = final.outputs
    assert output.filename == f"wait_00001_{suffix}" and output.content_type == f"image/{fmt}"
    data = stack_adapters.blobs.get(output.key)
    assert data.startswith(magic) and output.size == len(data)
    assert Image.open(io.BytesIO(data)).size == (8, 8)


def test_an_identical_resubmission_serves_the_output_node_from_the_cache_with_the_jobs_own_files(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    workflow = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 4242}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "again"}},
    }
    worker = make_worker(stack_adapters, registry)
    first = enqueue(stack_adapters, workflow)
    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]
    second = enqueue(stack_adapters, workflow)
    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]

    manifests = [
        JobManifest.model_validate_json(stack_adapters.blobs.get(manifest_key(TENANT, r.job_id)))
        for r in (first, second)
    ]
    assert manifests[0].executed == ["1", "2"] and manifests[0].cache_hits == []
    assert manifests[1].executed == [] and sorted(manifests[1].cache_hits) == ["1", "2"]
    blobs = []
    for record in (first, second):
        final = stack_adapters.store.get_by_id(record.job_id)
        assert final is not None and final.status is JobStatus.SUCCEEDED
        (output,) = final.outputs
        assert output.key == f"outputs/{TENANT}/{record.job_id}/again_00001_.png"
        blobs.append(stack_adapters.blobs.get(output.key))
    assert blobs[0].startswith(b"\x89PNG") and blobs[1] == blobs[0]


def test_a_preview_is_published_with_its_temp_folder_type(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    workflow = wait_workflow(0.0, steps=1)
    workflow["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}
    record = enqueue(stack_adapters, workflow)
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.SUCCEEDED]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None
    (output,) = final.outputs
    assert (output.type, output.node_id) == ("temp", "3") and output.filename.startswith("ComfyUI_temp_")
    assert output.key == f"outputs/{TENANT}/{record.job_id}/{output.filename}"
    assert stack_adapters.blobs.get(output.key).startswith(b"\x89PNG")


def test_inputs_are_fetched_from_the_blob_store(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 7), (10, 200, 30)).save(buffer, format="PNG")
    stack_adapters.blobs.put(f"inputs/{TENANT}/photo", buffer.getvalue(), "image/png")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "copy"}},
    }
    record = enqueue(stack_adapters, workflow, inputs={"photo.png": InputRef(key=f"inputs/{TENANT}/photo")})
    assert poll_until_processed(make_worker(stack_adapters, registry)) == [Outcome.SUCCEEDED]
    final = stack_adapters.store.get_by_id(record.job_id)
    assert final is not None
    image = Image.open(io.BytesIO(stack_adapters.blobs.get(final.outputs[0].key)))
    assert image.size == (12, 7) and image.convert("RGB").getpixel((3, 3)) == (10, 200, 30)


def test_drain_lets_the_running_job_finish_then_stops(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    worker = make_worker(stack_adapters, registry, drain_timeout_s=10)
    record = enqueue(stack_adapters, wait_workflow(0.5, steps=5))
    thread, _ = in_thread(worker.run)
    wait_for(lambda: running(stack_adapters, record.job_id), what="the claim")
    worker.request_drain()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert status(stack_adapters, record.job_id) is JobStatus.SUCCEEDED


def test_drain_past_its_grace_period_releases_the_job(
    stack_adapters: LocalAdapters, registry: NodeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(stack_adapters, registry, drain_timeout_s=0.2)
    record = enqueue(stack_adapters, wait_workflow(10.0, steps=100))
    thread, _ = in_thread(worker.run)
    wait_for(lambda: running(stack_adapters, record.job_id), what="the claim")
    worker.request_drain()
    thread.join(timeout=5)
    assert not thread.is_alive()

    released = stack_adapters.store.get_by_id(record.job_id)
    assert released is not None and released.status is JobStatus.QUEUED and released.attempts == 1
    (again,) = stack_adapters.queue.receive(1, 30, 0)
    assert again.message().job_id == record.job_id and again.receive_count == 2
    assert f"job {record.job_id} put back in the queue: the worker stopped before it finished" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


class RecordingProtection:
    """The scale-in protection port, recording its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float | None]] = []

    def protect(self, expires_in_s: float) -> None:
        self.calls.append(("protect", expires_in_s))

    def release(self) -> None:
        self.calls.append(("release", None))


def test_scale_in_protection_is_held_while_busy_and_released_when_idle(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    protection = RecordingProtection()
    worker = make_worker(stack_adapters, registry, protection=protection, job_timeout_s=600, protection_margin_s=60)
    enqueue(stack_adapters, wait_workflow(0.0, steps=1), timeout_s=30)
    enqueue(stack_adapters, wait_workflow(0.0, steps=1))

    assert worker.poll() == [Outcome.SUCCEEDED]
    assert protection.calls == [("protect", 90)]  # the job's own timeout, plus the margin
    assert worker.poll() == [Outcome.SUCCEEDED]  # back to back: renewed, never dropped in between
    assert protection.calls == [("protect", 90), ("protect", 660)]
    assert worker.poll() == []  # idle: dropped once
    assert worker.poll() == []
    assert protection.calls == [("protect", 90), ("protect", 660), ("release", None)]


class CountingStore:
    """The job store, counting the calls made while a job runs and the threads that made them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def update_progress(self, job_id: str, progress: Any) -> Any:
        self.calls.append(("update_progress", threading.current_thread().name))
        return self.inner.update_progress(job_id, progress)

    def get_by_id(self, job_id: str) -> Any:
        self.calls.append(("get_by_id", threading.current_thread().name))
        return self.inner.get_by_id(job_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_progress_and_cancel_checks_are_coalesced_on_the_heartbeat_thread(
    stack_adapters: LocalAdapters, registry: NodeRegistry
) -> None:
    store = CountingStore(stack_adapters.store)
    worker = make_worker(stack_adapters, registry, store=store, progress_interval_s=0.3, cancel_poll_s=0.5)
    record = enqueue(stack_adapters, wait_workflow(1.2, steps=400))  # 400 progress events in 1.2 s
    assert poll_until_processed(worker) == [Outcome.SUCCEEDED]

    during_run = store.calls[1:]  # after the worker's read of the record before its claim
    writes = [thread for name, thread in during_run if name == "update_progress"]
    assert 2 <= len(writes) <= 5  # at most one per 0.3 s, not one per step
    assert len([name for name, _ in during_run if name == "get_by_id"]) <= 2  # progress writes read the record too
    assert {thread for _, thread in during_run} == {"heartbeat"}  # none from the executor's callbacks
    progress = [e for e in stack_adapters.bus.events(record.job_id) if e.type is JobEventType.JOB_PROGRESS]
    assert len(progress) == len(writes)


def test_sigterm_while_busy_drains_the_job_in_hand(stack_adapters: LocalAdapters, registry: NodeRegistry) -> None:
    worker = make_worker(stack_adapters, registry, drain_timeout_s=10)
    record = enqueue(stack_adapters, wait_workflow(0.6, steps=6))
    waiting = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: worker.request_drain())
    try:
        thread, _ = in_thread(worker.run)
        wait_for(lambda: running(stack_adapters, record.job_id), what="the claim")
        os.kill(os.getpid(), signal.SIGTERM)
        thread.join(timeout=10)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not thread.is_alive()
    assert status(stack_adapters, record.job_id) is JobStatus.SUCCEEDED  # finished within the window
    assert status(stack_adapters, waiting.job_id) is JobStatus.QUEUED  # never received after the signal


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """A stream for the worker's Powertools Logger; the ``comfyserve`` logger and the root handlers' filters are
    put back afterwards (Powertools configures them process-wide)."""
    std = logging.getLogger(LOGGER_NAME)
    saved = dict(std.__dict__)
    filters = {handler: list(handler.filters) for handler in logging.root.handlers}
    try:
        yield io.StringIO()
    finally:
        std.__dict__.clear()
        std.__dict__.update(saved)
        for handler, kept in filters.items():
            handler.filters[:] = kept


def test_job_figures_go_out_as_emf_and_every_job_log_line_carries_the_job_id(
    stack_adapters: LocalAdapters, registry: NodeRegistry, json_log: io.StringIO
) -> None:
    documents: list[dict[str, Any]] = []
    telemetry = WorkerTelemetry(documents.append, worker_logger("INFO", json_log))
    ports = WorkerPorts(stack_adapters.blobs, stack_adapters.queue, stack_adapters.store, stack_adapters.bus)
    settings = WorkerSettings(work_dir=stack_adapters.work_dir, receive_wait_s=0)
    worker = Worker(ports, BuiltinBackend(registry), settings, telemetry=telemetry, cold_start_s=1.5)
    record = enqueue(stack_adapters, wait_workflow(0.0, steps=1))
    logging.getLogger("comfyserve.test").info("before the job")

    assert worker.poll() == [Outcome.SUCCEEDED]

    claimed, finished = documents
    assert claimed["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "comfyserve"
    assert claimed["JobsInFlight"] == [1.0] and len(claimed["QueueWait"]) == 1
    assert finished["JobsInFlight"] == [0.0] and finished["JobsSucceeded"] == [1.0]
    assert finished["ColdStart"] == [1.5] and len(finished["NodeTime"]) == 3 and len(finished["Execution"]) == 1
    assert claimed["tenant"] == finished["tenant"] == TENANT  # a property, not a dimension
    assert claimed["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    figures = summarize(documents, TENANT)
    assert figures["jobs_in_flight"] == 0 and figures["metrics"]["JobsSucceeded"]["count"] == 1
    assert figures["metrics"]["NodeTime"]["count"] == 3
    assert summarize(documents) == figures  # service-wide: the same single job
    assert summarize(documents, "another-tenant") == {"metrics": {}, "jobs_in_flight": 0}
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    job_lines = [line for line in lines if line["message"] != "before the job"]
    assert [line["message"] for line in job_lines] == ["job claimed (receive 1)", "job succeeded"]
    assert all((line["job_id"], line["tenant"], line["attempt"]) == (record.job_id, TENANT, 1) for line in job_lines)
    assert "job_id" not in lines[0]
