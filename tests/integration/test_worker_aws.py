"""One image-only job end to end over the AWS adapters (moto server over HTTP): submitted through the job
service, run by the worker loop, its images and manifest in S3, its events on the bus, and the requests the
worker spent on it."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobStatus
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.executor import Executor
from comfyserve.engine.registry import NodeRegistry, build_registry
from comfyserve.localstack.workers import JobOutputCache
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.models import JobSubmission
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.outputs import job_prefix, manifest_key
from tests.integration.conftest import AwsAdapters, AwsClients
from tests.integration.stack_helpers import IMAGE_PACKS, image_only, wait_for

TENANT = "acme"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_registry(IMAGE_PACKS)


def test_image_only_job_runs_end_to_end(
    aws_adapters: AwsAdapters, aws_clients: AwsClients, registry: NodeRegistry, tmp_path: Path
) -> None:
    queue, bus, blobs, store = aws_adapters.queue(), aws_adapters.bus, aws_adapters.blobs, aws_adapters.store
    service = JobService(ServiceDeps(blobs=blobs, queue=queue, jobs=store, events=bus, catalog=Catalog.packaged()))
    job_id = service.submit(TENANT, JobSubmission(workflow=image_only())).record.job_id
    # Progress writes and cancellation polls start after 30 s: the request count below is the job's own.
    settings = WorkerSettings(work_dir=tmp_path, visibility_timeout_s=30, progress_interval_s=30, cancel_poll_s=30)
    executor = Executor(registry, cache=JobOutputCache())
    worker = Worker(WorkerPorts(blobs, queue, store, bus), registry, executor, settings)
    aws_clients.calls.clear()
    try:
        outcomes = wait_for(worker.poll, 10, "the job's message")
    finally:
        executor.close()
    worker_calls = Counter(aws_clients.calls)

    record = store.get_by_id(job_id)
    assert outcomes == [Outcome.SUCCEEDED]
    assert record is not None and record.status is JobStatus.SUCCEEDED and record.attempts == 1
    output_keys = [ref.key for ref in record.outputs]
    assert len(output_keys) == 2 and all(key.startswith(job_prefix(TENANT, job_id)) for key in output_keys)
    assert blobs.list(job_prefix(TENANT, job_id)) == sorted([*output_keys, manifest_key(TENANT, job_id)])
    manifest = json.loads(blobs.get(manifest_key(TENANT, job_id)))
    assert manifest["status"] == "succeeded" and [o["key"] for o in manifest["outputs"]] == output_keys
    sizes = sorted(Image.open(io.BytesIO(blobs.get(key))).size for key in output_keys)
    assert sizes == [(160, 128), (320, 256)]  # padded 256x192 by 32 a side, halved; and the pad mask
    events = [event for event in aws_adapters.published() if event.job_id == job_id]
    assert Counter(event.type for event in events) == {
        JobEventType.JOB_QUEUED: 1,
        JobEventType.JOB_STARTED: 1,
        JobEventType.JOB_SUCCEEDED: 1,
    }
    succeeded = next(event for event in events if event.type is JobEventType.JOB_SUCCEEDED)
    assert succeeded.tenant == TENANT and [ref.key for ref in succeeded.outputs] == output_keys
    assert worker_calls == {  # no avoidable round trips: two images, then the manifest
        "ReceiveMessage": 1,
        "GetItem": 1,
        "UpdateItem": 2,
        "PutEvents": 2,
        "PutObject": 3,
        "DeleteMessage": 1,
    }
    assert queue.approximate_depth().total == 0
