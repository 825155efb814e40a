"""Integration fixtures: one moto server per session (real HTTP on loopback), and both adapter sets.

Each test gets fresh resources with unique names, so tests share the server but never state.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import pytest
from botocore.config import Config

from comfyserve.adapters.aws.dynamodb import DynamoJobStore
from comfyserve.adapters.aws.emulator import moto_server
from comfyserve.adapters.aws.eventbridge import EVENT_SOURCE, EventBridgeBus
from comfyserve.adapters.aws.provision import create_bucket, create_event_bus, create_jobs_table, create_queue
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
from comfyserve.adapters.local.sqlite_queue import SqliteJobQueue
from comfyserve.contracts.events import JobEvent
from tests.integration.lambda_events import fresh_import

if TYPE_CHECKING:
    from comfyserve.ports import BlobStore, EventBus, JobQueue, JobStore

REGION = "us-east-1"
LOCAL_BLOB_SECRET = b"contract-test-secret"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, with dummy credentials that cannot reach a real account."""
    with moto_server(REGION) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def aws_session(moto_endpoint: str) -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@dataclass
class AwsClients:
    endpoint: str
    session: boto3.Session
    calls: Counter[str] = field(default_factory=Counter)

    def client(self, service: str) -> Any:
        config = Config(s3={"addressing_style": "path"}, signature_version="s3v4" if service == "s3" else None)
        client = self.session.client(service, endpoint_url=self.endpoint, config=config)  # type: ignore[call-overload]
        client.meta.events.register("before-call.*.*", self._count)
        return client

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1


class AdapterSet(Protocol):
    """The four ports of one adapter family; implementations create resources lazily, on first use."""

    name: str

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def store(self) -> JobStore: ...

    @property
    def bus(self) -> EventBus: ...

    def queue(self, max_receives: int = 3) -> JobQueue:
        """A fresh queue whose messages move to its dead-letter queue after ``max_receives`` receives."""
        ...

    def published(self) -> list[JobEvent]:
        """The events a subscriber of the bus received, oldest first."""
        ...


class LocalAdapters:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.signer = BlobUrlSigner("http://127.0.0.1:8188", LOCAL_BLOB_SECRET)

    @cached_property
    def blobs(self) -> LocalBlobStore:
        return LocalBlobStore(self.root / "blobs", self.signer)

    @cached_property
    def store(self) -> SqliteJobStore:
        return SqliteJobStore(self.root / "jobs.sqlite")

    @cached_property
    def bus(self) -> JsonlEventBus:
        return JsonlEventBus(self.root / "events.jsonl")

    def queue(self, max_receives: int = 3) -> SqliteJobQueue:
        return SqliteJobQueue(self.root / "queue.sqlite", f"jobs-{uuid.uuid4().hex[:8]}", max_receives=max_receives)

    def published(self) -> list[JobEvent]:
        return self.bus.events()


class AwsAdapters:
    name = "aws"

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self.s3 = clients.client("s3")
        self.sqs = clients.client("sqs")
        self.dynamodb = clients.client("dynamodb")
        self.events = clients.client("events")

    @cached_property
    def blobs(self) -> S3BlobStore:
        create_bucket(self.s3, f"{self.prefix}-blobs")
        return S3BlobStore(self.s3, f"{self.prefix}-blobs")

    @cached_property
    def store(self) -> DynamoJobStore:
        create_jobs_table(self.dynamodb, f"{self.prefix}-jobs")
        return DynamoJobStore(self.dynamodb, f"{self.prefix}-jobs")

    @cached_property
    def bus(self) -> EventBridgeBus:
        """The bus, with a rule delivering every comfyserve event to an SQS queue the test reads back."""
        bus = f"{self.prefix}-events"
        create_event_bus(self.events, bus)
        self._subscriber_url = self.sqs.create_queue(QueueName=f"{self.prefix}-subscriber")["QueueUrl"]
        subscriber_arn = self.sqs.get_queue_attributes(QueueUrl=self._subscriber_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name=f"{self.prefix}-all", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]})
        )
        self.events.put_targets(
            Rule=f"{self.prefix}-all", EventBusName=bus, Targets=[{"Id": "subscriber", "Arn": subscriber_arn}]
        )
        return EventBridgeBus(self.events, bus)

    def queue(self, max_receives: int = 3) -> SqsJobQueue:
        urls = create_queue(self.sqs, f"{self.prefix}-{uuid.uuid4().hex[:6]}", max_receives=max_receives)
        return SqsJobQueue(self.sqs, urls.queue_url, urls.dead_letter_url)

    def envelopes(self) -> list[dict[str, Any]]:
        """The raw EventBridge envelopes the subscriber queue received."""
        envelopes: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(QueueUrl=self._subscriber_url, MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            if not messages:
                return envelopes
            for message in messages:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self._subscriber_url, ReceiptHandle=message["ReceiptHandle"])

    def published(self) -> list[JobEvent]:
        return [JobEvent.model_validate(envelope["detail"]) for envelope in self.envelopes()]


@pytest.fixture
def aws_clients(moto_endpoint: str, aws_session: boto3.Session) -> AwsClients:
    return AwsClients(moto_endpoint, aws_session)


@pytest.fixture
def aws_adapters(aws_clients: AwsClients) -> AwsAdapters:
    return AwsAdapters(aws_clients)


@pytest.fixture
def local_adapters(tmp_path: Path) -> LocalAdapters:
    return LocalAdapters(tmp_path)


@pytest.fixture(params=["local", "aws"])
def adapters(request: pytest.FixtureRequest) -> AdapterSet:
    adapter_set: AdapterSet = request.getfixturevalue(f"{request.param}_adapters")
    return adapter_set


@pytest.fixture(scope="module")
def import_lambda_api() -> Iterator[Callable[[], ModuleType]]:
    """``import_lambda_api()``: Lambda ``api`` imported anew (it reads the environment as it is then). What its
    imports change in the process's logging (the ``comfyserve`` logger's handlers, level and propagation; the
    job-id filter on the Powertools handler) is put back once the test module is done."""
    package = logging.getLogger("comfyserve")
    saved = dict(package.__dict__)
    loaded: list[ModuleType] = []

    def load() -> ModuleType:
        loaded.append(fresh_import("lambdas.api"))
        return loaded[-1]

    try:
        yield load
    finally:
        for module in loaded:
            module.logger.registered_handler.removeFilter(module.job_id_key)
        package.__dict__.clear()
        package.__dict__.update(saved)
