"""The ``dead_letter`` Lambda on moto: records really moved to the dead-letter queue by SQS's redrive policy,
handed over as an SQS event source batch; the job fails once, through the completion path."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.service.completion import final_event_id
from tests.integration.conftest import AwsAdapters
from tests.integration.lambda_events import context, fresh_import, sqs_event

TENANT = "acme"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}
}


class DeadLetterStack:
    def __init__(self, adapters: AwsAdapters, monkeypatch: pytest.MonkeyPatch) -> None:
        self.a = adapters
        self.queue: SqsJobQueue = adapters.queue(max_receives=1)
        assert self.queue.dead_letters is not None
        self.dlq_url = self.queue.dead_letters.queue_url
        self.dlq_arn = adapters.sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        env = {
            "AWS_ENDPOINT_URL": adapters.clients.endpoint,
            "COMFYSERVE_BUCKET": adapters.blobs.bucket,
            "COMFYSERVE_TABLE": adapters.store.table_name,
            "COMFYSERVE_QUEUE_URL": self.queue.queue_url,
            "COMFYSERVE_DLQ_URL": self.dlq_url,
            "COMFYSERVE_EVENT_BUS": adapters.bus.bus_name,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.module: ModuleType = fresh_import("lambdas.dead_letter")

    def job(self, job_id: str, status: JobStatus = JobStatus.QUEUED) -> JobRecord:
        record = JobRecord(job_id=job_id, tenant=TENANT, workflow=WORKFLOW)
        self.a.store.create(record)
        if status is JobStatus.RUNNING:
            record = self.a.store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING, attempts=1)
        return record

    def kill(self, body: str) -> list[dict[str, Any]]:
        """Send ``body``, receive it once without deleting it: the next receive moves it to the DLQ."""
        sqs = self.a.sqs
        sqs.send_message(QueueUrl=self.queue.queue_url, MessageBody=body)
        [received] = sqs.receive_message(QueueUrl=self.queue.queue_url, VisibilityTimeout=30)["Messages"]
        sqs.change_message_visibility(
            QueueUrl=self.queue.queue_url, ReceiptHandle=received["ReceiptHandle"], VisibilityTimeout=0
        )
        assert sqs.receive_message(QueueUrl=self.queue.queue_url).get("Messages") is None  # moved to the DLQ
        dead = sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])[
            "Messages"
        ]
        return [{"message": message, "arn": self.dlq_arn} for message in dead]

    def handle(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        response: dict[str, Any] = self.module.handler(sqs_event(records), context("dead_letter"))
        return response

    def events(self, job_id: str) -> list[Any]:
        return [e for e in self.a.published() if e.job_id == job_id]


@pytest.fixture
def stack(aws_adapters: AwsAdapters, monkeypatch: pytest.MonkeyPatch) -> DeadLetterStack:
    return DeadLetterStack(aws_adapters, monkeypatch)


def body(job_id: str) -> str:
    return QueueMessage(job_id=job_id, tenant=TENANT).model_dump_json()


@pytest.mark.parametrize("status", [JobStatus.RUNNING, JobStatus.QUEUED])
def test_a_dead_job_fails_once_with_the_reason(stack: DeadLetterStack, status: JobStatus) -> None:
    stack.job("dead1", status)
    records = stack.kill(body("dead1"))
    assert records[0]["message"]["Attributes"]["ApproximateReceiveCount"] == "2"

    first = stack.handle(records)
    again = stack.handle(records)  # redelivered

    assert first == again == {"batchItemFailures": []}
    record = stack.a.store.get_by_id("dead1")
    assert record is not None and record.status is JobStatus.FAILED and record.final_event == "published"
    assert record.error is not None and record.error.type == "dead_lettered"
    assert record.error.message == (
        "the job's message was received 2 times without the job finishing (the queue's maximum receive count); "
        "it was moved to the dead-letter queue"
    )
    assert record.attempts == 1
    manifest = JobManifest.model_validate_json(stack.a.blobs.get(manifest_key(TENANT, "dead1")))
    assert (manifest.status, manifest.worker_id, manifest.error) == ("failed", "dead-letter", record.error)
    failed = [e for e in stack.events("dead1") if e.type is JobEventType.JOB_FAILED]
    assert [e.event_id for e in failed] == [final_event_id("dead1")]


def test_a_job_whose_manifest_exists_completes_from_it(stack: DeadLetterStack) -> None:
    stack.job("late", JobStatus.RUNNING)
    stack.a.blobs.put(
        manifest_key(TENANT, "late"),
        JobManifest(job_id="late", tenant=TENANT, status="succeeded", worker_id="w1").to_bytes(),
    )
    assert stack.handle(stack.kill(body("late"))) == {"batchItemFailures": []}
    record = stack.a.store.get_by_id("late")
    assert record is not None and record.status is JobStatus.SUCCEEDED and record.error is None
    assert [e.type for e in stack.events("late")] == [JobEventType.JOB_SUCCEEDED]


def test_finished_unknown_and_foreign_messages_change_nothing(stack: DeadLetterStack) -> None:
    stack.job("done")
    stack.a.store.transition("done", {JobStatus.QUEUED}, JobStatus.CANCELLED)
    records = stack.kill(body("done")) + stack.kill(body("nosuchjob")) + stack.kill("not json")

    assert stack.handle(records) == {"batchItemFailures": []}

    record = stack.a.store.get_by_id("done")
    assert record is not None and record.status is JobStatus.CANCELLED
    assert stack.a.blobs.list("outputs/") == [] and stack.a.published() == []


def test_a_passing_failure_reports_only_its_record(stack: DeadLetterStack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.job("ok")
    stack.job("flaky")
    records = stack.kill(body("ok")) + stack.kill(body("flaky"))
    store = stack.module.dead_letters._store
    real_get = store.get_by_id

    def get_by_id(job_id: str) -> Any:
        if job_id == "flaky":
            raise ConnectionError("DynamoDB unreachable")
        return real_get(job_id)

    monkeypatch.setattr(store, "get_by_id", get_by_id)
    response = stack.handle(records)

    assert response == {"batchItemFailures": [{"itemIdentifier": records[1]["message"]["MessageId"]}]}
    assert stack.a.store.get_by_id("ok").status is JobStatus.FAILED  # type: ignore[union-attr]
    assert real_get("flaky").status is JobStatus.QUEUED
    assert json.loads(records[1]["message"]["Body"])["job_id"] == "flaky"
