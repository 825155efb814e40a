"""Create the bucket, queues, table and bus the AWS adapters need, for tests and local dev against moto.

The CDK stack creates the same resources in the cloud with the same shapes (the table's keys and index come
from ``dynamodb``'s constants; the redrive policy from ``create_queue``'s arguments).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from comfyserve.adapters.aws.dynamodb import (
    DISPATCH_ATTR,
    DISPATCH_INDEX,
    ORDER_ATTR,
    PARTITION_KEY,
    TENANT_ATTR,
    TENANT_INDEX,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True)
class QueueUrls:
    queue_url: str
    dead_letter_url: str


@dataclass(frozen=True)
class AwsResources:
    bucket: str
    queue: QueueUrls
    table: str
    bus: str


def create_bucket(s3: S3Client, name: str) -> None:
    s3.create_bucket(Bucket=name)


def create_queue(sqs: SQSClient, name: str, *, max_receives: int = 3, visibility_timeout_s: int = 300) -> QueueUrls:
    """The jobs queue and its dead-letter queue (``<name>-dlq``, 14 days' retention) joined by a redrive policy."""
    dead_letter_url = sqs.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)}
    )["QueueUrl"]
    dead_letter_arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receives)}
    queue_url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": str(visibility_timeout_s), "RedrivePolicy": json.dumps(redrive)},
    )["QueueUrl"]
    return QueueUrls(queue_url=queue_url, dead_letter_url=dead_letter_url)


def create_jobs_table(dynamodb: DynamoDBClient, name: str) -> None:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": TENANT_ATTR, "AttributeType": "S"},
            {"AttributeName": ORDER_ATTR, "AttributeType": "S"},
            {"AttributeName": DISPATCH_ATTR, "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": TENANT_INDEX,
                "KeySchema": [
                    {"AttributeName": TENANT_ATTR, "KeyType": "HASH"},
                    {"AttributeName": ORDER_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": DISPATCH_INDEX,
                "KeySchema": [
                    {"AttributeName": DISPATCH_ATTR, "KeyType": "HASH"},
                    {"AttributeName": ORDER_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    )
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})


def create_event_bus(events: EventBridgeClient, name: str) -> str:
    """The bus; returns its ARN."""
    return events.create_event_bus(Name=name)["EventBusArn"]


def provision(
    s3: S3Client,
    sqs: SQSClient,
    dynamodb: DynamoDBClient,
    events: EventBridgeClient,
    prefix: str,
    *,
    max_receives: int = 3,
    visibility_timeout_s: int = 300,
) -> AwsResources:
    """Everything, named ``<prefix>-…`` (the prefix must suit S3 bucket naming: lowercase, digits, dashes)."""
    create_bucket(s3, f"{prefix}-blobs")
    queue = create_queue(sqs, f"{prefix}-jobs", max_receives=max_receives, visibility_timeout_s=visibility_timeout_s)
    create_jobs_table(dynamodb, f"{prefix}-jobs")
    create_event_bus(events, f"{prefix}-events")
    return AwsResources(bucket=f"{prefix}-blobs", queue=queue, table=f"{prefix}-jobs", bus=f"{prefix}-events")
