"""The four AWS adapters of one deployment, built from its resource names (API Lambda and worker alike).

boto3 honours ``AWS_ENDPOINT_URL`` (and the per-service variables) for runs against an emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from comfyserve.adapters.aws.dynamodb import DynamoJobStore
from comfyserve.adapters.aws.eventbridge import EventBridgeBus
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.settings import AwsResourceNames


@dataclass(frozen=True)
class AwsPorts:
    blobs: S3BlobStore
    queue: SqsJobQueue
    jobs: DynamoJobStore
    events: EventBridgeBus


def aws_ports(
    names: AwsResourceNames,
    *,
    session: boto3.session.Session | None = None,
    client_config: Config | None = None,
) -> AwsPorts:
    session = session or boto3.session.Session()
    config = client_config or Config()

    def client(service: str, extra: Config | None = None) -> Any:
        return session.client(service, config=config.merge(extra) if extra else config)  # type: ignore[call-overload]

    return AwsPorts(
        blobs=S3BlobStore(client("s3", Config(signature_version="s3v4")), names.bucket),
        queue=SqsJobQueue(client("sqs"), names.queue_url, names.dlq_url),
        jobs=DynamoJobStore(client("dynamodb"), names.table, retention_days=names.record_retention_days),
        events=EventBridgeBus(client("events"), names.event_bus),
    )
