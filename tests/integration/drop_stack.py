"""A deployment's drop-folder wiring on moto, as the stack builds it: the jobs resources, an inbox bucket that
sends its events to EventBridge, the default-bus rule on ``inbox/`` and a ``comfyserve`` bus rule on
drop-folder job events — each routed to an SQS queue the test reads the real envelopes from (moto delivers
rules to SQS targets, not to Lambda)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from comfyserve.adapters.aws.eventbridge import EVENT_SOURCE
from comfyserve.adapters.aws.provision import AwsResources, create_bucket, provision
from tests.integration.conftest import AwsClients

INBOX_RULE: dict[str, Any] = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {"object": {"key": [{"prefix": "inbox/"}]}},
}
OUTBOX_RULE: dict[str, Any] = {
    "source": [EVENT_SOURCE],
    "detail": {"metadata": {"drop_folder": {"key": [{"exists": True}]}}},
}


class DropStack:
    def __init__(self, clients: AwsClients, moto_endpoint: str) -> None:
        self.prefix = f"d{uuid.uuid4().hex[:10]}"
        self.s3 = clients.client("s3")
        self.sqs = clients.client("sqs")
        self.events = clients.client("events")
        self.resources: AwsResources = provision(
            self.s3, self.sqs, clients.client("dynamodb"), self.events, self.prefix
        )
        self.inbox = f"{self.prefix}-inbox"
        create_bucket(self.s3, self.inbox)
        self.s3.put_bucket_versioning(Bucket=self.inbox, VersioningConfiguration={"Status": "Enabled"})
        self.s3.put_bucket_notification_configuration(
            Bucket=self.inbox, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        inbox_rule = {**INBOX_RULE, "detail": {**INBOX_RULE["detail"], "bucket": {"name": [self.inbox]}}}
        self.inbox_events = self.rule_to_queue("default", f"{self.prefix}-inbox", inbox_rule)
        self.job_events = self.rule_to_queue(self.resources.bus, f"{self.prefix}-outbox", OUTBOX_RULE)
        self.env = {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "COMFYSERVE_BUCKET": self.resources.bucket,
            "COMFYSERVE_QUEUE_URL": self.resources.queue.queue_url,
            "COMFYSERVE_DLQ_URL": self.resources.queue.dead_letter_url,
            "COMFYSERVE_TABLE": self.resources.table,
            "COMFYSERVE_EVENT_BUS": self.resources.bus,
            "COMFYSERVE_INBOX_BUCKET": self.inbox,
        }

    def rule_to_queue(self, bus: str, name: str, pattern: dict[str, Any]) -> str:
        url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
        self.events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
        return url

    def setenv(self, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
        for name, value in {**self.env, **extra}.items():
            monkeypatch.setenv(name, value)

    def drop(self, key: str, body: bytes, content_type: str = "application/json") -> None:
        self.s3.put_object(Bucket=self.inbox, Key=key, Body=body, ContentType=content_type)

    def outbox(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.inbox, Key=key)["Body"].read())

    def outbox_keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.inbox, Prefix="outbox/").get("Contents", [])
        return sorted(item["Key"] for item in listed)

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Every envelope the queue holds, deleted as read."""
        envelopes: list[dict[str, Any]] = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return envelopes
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])

    def queue_depth(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.resources.queue.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])
