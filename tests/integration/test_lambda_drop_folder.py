"""The ``drop_folder`` Lambda on moto, fed the events moto's S3 and EventBridge really emit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from comfyserve.adapters.aws.dynamodb import DynamoJobStore
from comfyserve.adapters.aws.eventbridge import EventBridgeBus
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, OutputRef
from comfyserve.service.drop_folder import DropPath, idempotency_key
from comfyserve.service.outbox import TenantMap
from tests.images import png
from tests.integration.conftest import AwsClients
from tests.integration.drop_stack import DropStack
from tests.integration.lambda_events import context, fresh_import

PNG = png()  # images a workflow loads get /upload/image's checks at submit
SAVE = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI"}}
EMPTY = {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
LOAD = {"class_type": "LoadImage", "inputs": {"image": "refs/cat.png"}}


@pytest.fixture
def stack(aws_clients: AwsClients, moto_endpoint: str) -> DropStack:
    return DropStack(aws_clients, moto_endpoint)


@pytest.fixture
def lambda_module(stack: DropStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    stack.setenv(monkeypatch, COMFYSERVE_DROP_TENANTS="acme:tenant-acme,beta:beta")
    yield fresh_import("lambdas.drop_folder")


def run(module: ModuleType, envelopes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [module.handler(envelope, context("drop_folder")) for envelope in envelopes]


def jobs(stack: DropStack, aws_clients: AwsClients, tenant: str) -> list[Any]:
    store = DynamoJobStore(aws_clients.client("dynamodb"), stack.resources.table)
    return store.list(tenant)[0]


def test_a_dropped_workflow_with_an_image_beside_it_becomes_one_job(
    stack: DropStack, lambda_module: ModuleType, aws_clients: AwsClients
) -> None:
    stack.drop("inbox/acme/batch/refs/cat.png", PNG, "binary/octet-stream")
    stack.drop("inbox/acme/batch/one.json", json.dumps({"1": LOAD, "2": SAVE}).encode())
    envelopes = stack.drain(stack.inbox_events)
    assert [e["detail"]["object"]["key"] for e in envelopes] == [
        "inbox/acme/batch/refs/cat.png",
        "inbox/acme/batch/one.json",
    ]

    results = run(lambda_module, envelopes + envelopes[1:])  # the request's event delivered twice

    [job] = jobs(stack, aws_clients, "tenant-acme")
    assert results == [
        {"outcome": "ignored", "job_id": None, "error": None},
        {"outcome": "submitted", "job_id": job.job_id, "error": None},
        {"outcome": "duplicate", "job_id": job.job_id, "error": None},
    ]
    assert stack.queue_depth() == 1
    assert job.status is JobStatus.QUEUED
    assert set(job.inputs) == {"refs/cat.png"} and job.inputs["refs/cat.png"].content_type == "image/png"
    assert job.metadata["drop_folder"] == {"prefix": "acme", "name": "batch/one", "key": "inbox/acme/batch/one.json"}
    assert json.loads(stack.outbox("outbox/acme/batch/one/job.json")) == {
        "job_id": job.job_id,
        "status": "queued",
        "source": "inbox/acme/batch/one.json",
    }
    assert stack.drain(stack.inbox_events) == []  # writing the outbox started nothing


def test_a_request_json_keeps_its_own_fields(
    stack: DropStack, lambda_module: ModuleType, aws_clients: AwsClients
) -> None:
    request = {"workflow": {"1": EMPTY, "2": SAVE}, "metadata": {"batch": 7}, "output": {"format": "webp"}}
    stack.drop("inbox/beta/req.json", json.dumps(request).encode())
    [result] = run(lambda_module, stack.drain(stack.inbox_events))
    [job] = jobs(stack, aws_clients, "beta")
    assert result["outcome"] == "submitted" and result["job_id"] == job.job_id
    assert job.metadata["batch"] == 7 and job.output.format == "webp"


@pytest.mark.parametrize(
    ("key", "body", "error_type", "message"),
    [
        ("inbox/acme/bad.json", b'{"1": ', "invalid_json", "Invalid JSON"),
        ("inbox/acme/bad.json", b'{"workflow": {}, "colour": 1}', "invalid_request", "Invalid job request"),
        (
            "inbox/acme/bad.json",
            json.dumps({"1": {"class_type": "NoSuchNode", "inputs": {}}}).encode(),
            "invalid_prompt",
            "Cannot execute because node NoSuchNode does not exist.",
        ),
        ("inbox/gamma/bad.json", json.dumps({"1": EMPTY, "2": SAVE}).encode(), "unknown_tenant", "Unknown drop folder"),
        ("inbox/acme/bad.json", b" " * (5 * 1024 * 1024 + 1), "request_too_large", "Request too large"),
    ],
)
def test_a_bad_file_gets_an_error_beside_it_and_nothing_is_enqueued(
    stack: DropStack,
    lambda_module: ModuleType,
    aws_clients: AwsClients,
    key: str,
    body: bytes,
    error_type: str,
    message: str,
) -> None:
    stack.drop(key, body)
    [result] = run(lambda_module, stack.drain(stack.inbox_events))

    prefix = key.split("/")[1]
    error = json.loads(stack.outbox(f"outbox/{prefix}/bad/error.json"))
    assert result == {"outcome": "refused", "job_id": None, "error": error["error"]}
    assert error["source"] == key
    assert (error["error"]["type"], error["error"]["message"]) == (error_type, message)
    assert stack.queue_depth() == 0
    assert jobs(stack, aws_clients, "tenant-acme") == [] and jobs(stack, aws_clients, "gamma") == []
    assert stack.outbox_keys() == [f"outbox/{prefix}/bad/error.json"]


def test_results_of_a_finished_drop_job_are_copied_to_the_outbox(
    stack: DropStack, lambda_module: ModuleType, aws_clients: AwsClients
) -> None:
    stack.drop("inbox/acme/one.json", json.dumps({"1": EMPTY, "2": SAVE}).encode())
    [submitted] = run(lambda_module, stack.drain(stack.inbox_events))
    store = DynamoJobStore(aws_clients.client("dynamodb"), stack.resources.table)
    job = store.get("tenant-acme", submitted["job_id"])
    assert job is not None
    [queued] = stack.drain(stack.job_events)  # the submit's own JobQueued also matches the outbox rule
    assert run(lambda_module, [queued]) == [{"outbox": None, "keys": []}]
    output_key = f"outputs/tenant-acme/{job.job_id}/ComfyUI_00001_.png"
    stack.s3.put_object(Bucket=stack.resources.bucket, Key=output_key, Body=PNG, ContentType="image/png")
    ref = OutputRef(node_id="2", key=output_key, filename="ComfyUI_00001_.png", content_type="image/png", size=len(PNG))
    bus = EventBridgeBus(aws_clients.client("events"), stack.resources.bus)
    finished = job.model_copy(update={"status": JobStatus.SUCCEEDED, "outputs": [ref]})
    bus.publish(JobEvent.from_record(JobEventType.JOB_SUCCEEDED, finished))
    bus.publish(JobEvent.from_record(JobEventType.JOB_QUEUED, job))  # not terminal: no copy

    results = run(lambda_module, stack.drain(stack.job_events))

    folder = "outbox/acme/one/"
    assert results == [
        {"outbox": folder, "keys": [folder + "ComfyUI_00001_.png", folder + "result.json"]},
        {"outbox": None, "keys": []},
    ]
    assert stack.outbox(folder + "ComfyUI_00001_.png") == PNG
    result = json.loads(stack.outbox(folder + "result.json"))
    assert (result["job_id"], result["status"], result["error"]) == (job.job_id, "succeeded", None)
    assert result["outputs"] == [
        {"node_id": "2", "filename": "ComfyUI_00001_.png", "key": folder + "ComfyUI_00001_.png", "size": len(PNG)}
    ]
    assert stack.drain(stack.inbox_events) == []


def test_paths_tenants_and_keys() -> None:
    assert DropPath.parse("inbox/acme/a/b.json") == DropPath("inbox/acme/a/b.json", "acme", "a/b")
    assert DropPath.parse("inbox/acme/a/b.json").directory == "inbox/acme/a/"  # type: ignore[union-attr]
    invalid = ("inbox/acme.json", "inbox/acme/cat.png", "outbox/acme/x.json", "inbox//x.json", "inbox/a/.json")
    for key in (*invalid, "inbox/a/b//c.json", "inbox/a/../b.json"):
        assert DropPath.parse(key) is None, key
    assert TenantMap("").tenant_of("anyone") == "anyone"
    assert TenantMap("a:t1, b:t2").tenant_of("b") == "t2" and TenantMap("a:t1").tenant_of("b") is None
    with pytest.raises(ValueError, match="expected \"prefix:tenant\" items, got 'a'"):
        TenantMap("a")
    key = idempotency_key("inbox/" + "é" * 600 + ".json", "v1")
    assert key.isascii() and len(key) == 53 and key != idempotency_key("inbox/" + "é" * 600 + ".json", "v2")


def test_a_job_cannot_write_into_another_tenants_outbox(
    stack: DropStack, lambda_module: ModuleType, aws_clients: AwsClients
) -> None:
    """An API caller may put any ``drop_folder`` metadata on a job: only a folder mapped to its own tenant counts."""
    record = JobRecord(
        job_id="j1",
        tenant="tenant-acme",
        workflow_key="w",
        status=JobStatus.SUCCEEDED,
        metadata={"drop_folder": {"prefix": "beta", "name": "x", "key": "inbox/beta/x.json"}},
    )
    bus = EventBridgeBus(aws_clients.client("events"), stack.resources.bus)
    bus.publish(JobEvent.from_record(JobEventType.JOB_SUCCEEDED, record))

    assert run(lambda_module, stack.drain(stack.job_events)) == [{"outbox": None, "keys": []}]
    assert stack.outbox_keys() == []
