"""Jobs end to end over the AWS adapters (moto server over HTTP), on the cloud's completion path: submitted
through the job service, run by the worker loop, its images and manifest in S3, the manifest's "Object
Created" event from S3 through EventBridge (default bus, a rule on manifest keys, an SQS target standing in
for the Lambda trigger) handed to Lambda ``completion``; and the requests each side spent on a job."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.contracts.manifest import job_prefix, manifest_key
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.registry import NodeRegistry, build_registry
from comfyserve.service.completion import final_event_id
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.models import JobSubmission
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from tests.integration.conftest import REGION, AwsAdapters, AwsClients
from tests.integration.lambda_events import context, fresh_import
from tests.integration.stack_helpers import IMAGE_PACKS, STACK_NODES, image_only, wait_for, wait_workflow

TENANT = "acme"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_registry(IMAGE_PACKS, custom_nodes=[STACK_NODES])


@dataclass
class Cloud:
    adapters: AwsAdapters
    queue: SqsJobQueue
    s3_events_url: str
    completion: ModuleType  # lambdas.completion, built from the environment as in the cloud

    def object_created(self) -> list[dict[str, Any]]:
        """The S3 "Object Created" envelopes the manifest rule delivered so far."""
        sqs, envelopes = self.adapters.sqs, []
        while messages := sqs.receive_message(QueueUrl=self.s3_events_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.s3_events_url, ReceiptHandle=message["ReceiptHandle"])
        return envelopes

    def deliver(self, envelopes: list[dict[str, Any]]) -> list[str]:
        return [self.completion.handler(envelope, context("completion"))["outcome"] for envelope in envelopes]


@pytest.fixture
def cloud(aws_adapters: AwsAdapters, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """S3 → EventBridge for the bucket, a default-bus rule on manifest keys, and the completion Lambda."""
    blobs, queue, bus, store = (
        aws_adapters.blobs,
        aws_adapters.queue(max_receives=2),
        aws_adapters.bus,
        aws_adapters.store,
    )
    aws_adapters.s3.put_bucket_notification_configuration(
        Bucket=blobs.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    url = aws_adapters.sqs.create_queue(QueueName=f"{aws_adapters.prefix}-s3-events")["QueueUrl"]
    arn = aws_adapters.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [blobs.bucket]}, "object": {"key": [{"suffix": "/manifest.json"}]}},
    }
    rule = f"{aws_adapters.prefix}-manifests"
    aws_adapters.events.put_rule(Name=rule, EventPattern=json.dumps(pattern))
    aws_adapters.events.put_targets(Rule=rule, Targets=[{"Id": "completion", "Arn": arn}])
    for name, value in {
        "COMFYSERVE_BUCKET": blobs.bucket,
        "COMFYSERVE_TABLE": store.table_name,
        "COMFYSERVE_QUEUE_URL": queue.queue_url,
        "COMFYSERVE_EVENT_BUS": bus.bus_name,
        "AWS_ENDPOINT_URL": aws_adapters.clients.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    return Cloud(aws_adapters, queue, url, fresh_import("lambdas.completion"))


def make_worker(cloud: Cloud, registry: NodeRegistry, work_dir: Path, **settings: Any) -> Worker:
    a = cloud.adapters
    # Progress writes and cancellation polls start after 30 s: the request counts below are the job's own.
    options: dict[str, Any] = {"receive_wait_s": 0, "progress_interval_s": 30, "cancel_poll_s": 30, **settings}
    return Worker(
        WorkerPorts(a.blobs, cloud.queue, a.store, a.bus),
        BuiltinBackend(registry),
        WorkerSettings(work_dir=work_dir, visibility_timeout_s=30, **options),
    )


def submit(cloud: Cloud, workflow: dict[str, Any]) -> str:
    a = cloud.adapters
    deps = ServiceDeps(blobs=a.blobs, queue=cloud.queue, jobs=a.store, events=a.bus, catalog=Catalog.packaged())
    return JobService(deps).submit(TENANT, JobSubmission(workflow=workflow)).record.job_id


def enqueue(cloud: Cloud, job_id: str, workflow: dict[str, Any]) -> str:
    """A job straight into the store and the queue (workflows of the test pack are not in the packaged catalog)."""
    cloud.adapters.store.create(JobRecord(job_id=job_id, tenant=TENANT, workflow=workflow))
    cloud.queue.send(QueueMessage(job_id=job_id, tenant=TENANT))
    return job_id


def test_image_only_job_runs_end_to_end(
    cloud: Cloud, aws_clients: AwsClients, registry: NodeRegistry, tmp_path: Path
) -> None:
    blobs, store = cloud.adapters.blobs, cloud.adapters.store
    job_id = submit(cloud, image_only())
    worker = make_worker(cloud, registry, tmp_path)
    aws_clients.calls.clear()
    assert wait_for(worker.poll, 10, "the job's message") == [Outcome.SUCCEEDED]
    worker_calls = Counter(aws_clients.calls)
    assert store.get_by_id(job_id).status is JobStatus.RUNNING  # type: ignore[union-attr]  # completion is not the worker's

    envelopes = cloud.object_created()
    assert [e["detail"]["object"]["key"] for e in envelopes] == [manifest_key(TENANT, job_id)]
    assert cloud.deliver(envelopes) == ["completed"]

    record = store.get_by_id(job_id)
    assert record is not None and record.status is JobStatus.SUCCEEDED and record.attempts == 1
    assert record.final_event == "published" and record.timings.execution_s is not None
    output_keys = [ref.key for ref in record.outputs]
    assert len(output_keys) == 2 and all(key.startswith(job_prefix(TENANT, job_id)) for key in output_keys)
    assert blobs.list(job_prefix(TENANT, job_id)) == sorted([*output_keys, manifest_key(TENANT, job_id)])
    manifest = json.loads(blobs.get(manifest_key(TENANT, job_id)))
    assert manifest["status"] == "succeeded" and [o["key"] for o in manifest["outputs"]] == output_keys
    assert (manifest["attempt"], manifest["backend"], manifest["cold_start"]) == (1, "builtin", True)
    sizes = sorted(Image.open(io.BytesIO(blobs.get(key))).size for key in output_keys)
    assert sizes == [(160, 128), (320, 256)]  # padded 256x192 by 32 a side, halved; and the pad mask
    envelopes_on_bus = [e for e in cloud.adapters.envelopes() if e["detail"]["job_id"] == job_id]
    assert Counter(e["detail-type"] for e in envelopes_on_bus) == {
        "Job Queued": 1,
        "Job Started": 1,
        "Job Succeeded": 1,
    }
    assert {e["source"] for e in envelopes_on_bus} == {"comfyserve.job"}
    succeeded = next(e["detail"] for e in envelopes_on_bus if e["detail-type"] == "Job Succeeded")
    assert succeeded["event_id"] == final_event_id(job_id) and [o["key"] for o in succeeded["outputs"]] == output_keys
    assert worker_calls == {  # no avoidable round trips: claim, started, two images, the manifest, ack
        "ReceiveMessage": 1,
        "GetItem": 1,
        "UpdateItem": 1,
        "PutEvents": 1,
        "PutObject": 3,
        "DeleteMessage": 1,
    }
    assert cloud.queue.approximate_depth().total == 0


def test_duplicated_and_reordered_object_created_events_complete_each_job_once(
    cloud: Cloud, registry: NodeRegistry, tmp_path: Path
) -> None:
    first, second = submit(cloud, image_only()), submit(cloud, image_only())
    worker = make_worker(cloud, registry, tmp_path)
    assert wait_for(worker.poll, 10, "a job") + wait_for(worker.poll, 10, "a job") == [Outcome.SUCCEEDED] * 2
    by_job = {e["detail"]["object"]["key"].split("/")[2]: e for e in cloud.object_created()}

    outcomes = cloud.deliver([by_job[second], by_job[first], by_job[second], by_job[first], by_job[first]])

    assert outcomes == ["completed", "completed", "duplicate", "duplicate", "duplicate"]
    terminal = [e for e in cloud.adapters.published() if e.type is JobEventType.JOB_SUCCEEDED]
    assert sorted(e.job_id for e in terminal) == sorted([first, second])
    for job_id in (first, second):
        record = cloud.adapters.store.get_by_id(job_id)
        assert record is not None and record.status is JobStatus.SUCCEEDED and record.final_event == "published"


class WorkerCrash(BaseException):
    """The worker process dying in the middle of a job (what the loop cannot catch)."""


class CrashingBackend:
    name = "crashing"

    def __init__(self) -> None:
        self.runs = 0

    def start(self) -> None: ...

    def run(self, job: BackendJob) -> BackendResult:
        self.runs += 1
        raise WorkerCrash("segfault")

    def object_info(self) -> dict[str, Any]:
        return {}

    def close(self) -> None: ...


def test_a_poison_job_goes_to_the_dead_letter_queue_and_is_never_completed(
    cloud: Cloud, registry: NodeRegistry, tmp_path: Path
) -> None:
    """It kills its worker on every receive: after max_receives (2) the queue moves it to the dead-letter queue,
    with no manifest and no terminal state written (the dead-letter handler fails it, once)."""
    a = cloud.adapters
    record = a.store.get_by_id(enqueue(cloud, "poison", wait_workflow(0.0, steps=1)))
    assert record is not None
    backend = CrashingBackend()
    worker = Worker(
        WorkerPorts(a.blobs, cloud.queue, a.store, a.bus),
        backend,
        WorkerSettings(work_dir=tmp_path, visibility_timeout_s=1, receive_wait_s=1),
    )

    def poll_crashing() -> bool:
        try:
            worker.poll()
        except WorkerCrash:
            return True
        return False

    for _ in range(2):
        wait_for(poll_crashing, 10, "a delivery that crashes the worker")
    dead = cloud.queue.dead_letters
    assert dead is not None
    wait_for(lambda: worker.poll() == [] and dead.approximate_depth().visible == 1, 10, "the dead letter")

    final = a.store.get_by_id(record.job_id)
    assert backend.runs == 2 and final is not None and final.attempts == 2
    assert final.status is JobStatus.RUNNING and final.final_event is None
    assert a.blobs.list(job_prefix(TENANT, record.job_id)) == []
    assert [e.type for e in a.published() if e.job_id == record.job_id] == [JobEventType.JOB_STARTED] * 2
    assert cloud.object_created() == []


def test_drain_past_its_window_releases_the_job_at_once_on_sqs(
    cloud: Cloud, registry: NodeRegistry, tmp_path: Path
) -> None:
    job_id = enqueue(cloud, "draining", wait_workflow(10.0, steps=100))
    worker = make_worker(cloud, registry, tmp_path, drain_timeout_s=0.3, cancel_poll_s=1)
    done: list[list[Outcome]] = []
    thread = _thread(lambda: done.append(wait_for(worker.poll, 10, "the job")))
    wait_for(lambda: cloud.adapters.store.get_by_id(job_id).status is JobStatus.RUNNING, 10, "the claim")  # type: ignore[union-attr]
    worker.request_drain()
    thread.join(timeout=10)

    assert done == [[Outcome.RELEASED]]
    record = cloud.adapters.store.get_by_id(job_id)
    assert record is not None and record.status is JobStatus.QUEUED and record.attempts == 1
    (again,) = cloud.queue.receive(1, 30, 0)  # visible at once, not after the 30 s visibility
    assert again.message().job_id == job_id and again.receive_count == 2
    assert cloud.object_created() == []


def _thread(target: Callable[[], object]) -> Any:
    import threading

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def _no_leftover_modules() -> Iterator[None]:
    yield
    import sys

    sys.modules.pop("lambdas.completion", None)
