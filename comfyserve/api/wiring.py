"""The cloud composition root: the job service over S3, SQS, DynamoDB and EventBridge, and its route table.

Resource names come from the environment the CDK stack sets on the ``api`` function::

    COMFYSERVE_BUCKET       blob bucket          COMFYSERVE_TABLE      jobs table
    COMFYSERVE_QUEUE_URL    jobs queue URL       COMFYSERVE_EVENT_BUS  event bus name

The service settings come from ``COMFYSERVE_*`` as :class:`ServiceSettings` documents (``COMFYSERVE_AUTH``
defaults to ``api_gateway`` here). boto3 honours ``AWS_ENDPOINT_URL`` for runs against an emulator.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from botocore.config import Config

from comfyserve.adapters.aws.dynamodb import DynamoJobStore
from comfyserve.adapters.aws.eventbridge import EventBridgeBus
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.api.app import build_app
from comfyserve.api.auth import authenticator_from_settings
from comfyserve.engine.catalog import Catalog
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.settings import ServiceSettings


@dataclass(frozen=True)
class AwsResourceNames:
    bucket: str
    queue_url: str
    table: str
    event_bus: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AwsResourceNames:
        env = os.environ if environ is None else environ
        names = {"bucket": "BUCKET", "queue_url": "QUEUE_URL", "table": "TABLE", "event_bus": "EVENT_BUS"}
        missing = [f"COMFYSERVE_{var}" for var in names.values() if not env.get(f"COMFYSERVE_{var}")]
        if missing:
            raise ValueError(f"missing environment variables: {', '.join(missing)}")
        return cls(**{field: env[f"COMFYSERVE_{var}"] for field, var in names.items()})


def aws_service(
    names: AwsResourceNames,
    settings: ServiceSettings,
    *,
    catalog: Catalog | None = None,
    session: boto3.session.Session | None = None,
    client_config: Config | None = None,
) -> JobService:
    session = session or boto3.session.Session()
    config = client_config or Config()

    def client(service: str, extra: Config | None = None) -> Any:
        return session.client(service, config=config.merge(extra) if extra else config)  # type: ignore[call-overload]

    deps = ServiceDeps(
        blobs=S3BlobStore(client("s3", Config(signature_version="s3v4")), names.bucket),
        queue=SqsJobQueue(client("sqs"), names.queue_url),
        jobs=DynamoJobStore(client("dynamodb"), names.table),
        events=EventBridgeBus(client("events"), names.event_bus),
        catalog=catalog or Catalog.packaged(),
        settings=settings,
    )
    return JobService(deps)


def aws_app_from_env() -> APIGatewayRestResolver:
    """The Lambda ``api`` function's resolver, built once per cold start."""
    settings = ServiceSettings.from_env(auth=os.environ.get("COMFYSERVE_AUTH", "api_gateway"))
    service = aws_service(AwsResourceNames.from_env(), settings)
    return build_app(service, authenticator_from_settings(settings))
