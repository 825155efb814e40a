"""The same submit path over the AWS adapters (moto server over HTTP): behaviour, and the boto3 requests each
operation costs, counted with botocore's event hooks."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import requests

from comfyserve.adapters.aws.provision import provision
from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiGatewayAuthenticator
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobStatus, OutputRef
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.settings import ServiceSettings
from tests.api_stack import tiny_catalog, workflow
from tests.apigw import ApiResponse, resolve, rest_event
from tests.images import png
from tests.integration.conftest import AwsAdapters, AwsClients

TENANT = "k3y1d"
PNG = png()


class AwsStack:
    def __init__(self, adapters: AwsAdapters, clients: AwsClients, **settings: Any) -> None:
        self.adapters = adapters
        self.calls = clients.calls
        self.queue = adapters.queue()
        deps = ServiceDeps(
            blobs=adapters.blobs,
            queue=self.queue,
            jobs=adapters.store,
            events=adapters.bus,
            catalog=tiny_catalog(),
            settings=ServiceSettings(**settings),
        )
        self.service = JobService(deps)
        self.app = build_app(self.service, ApiGatewayAuthenticator())
        self.calls.clear()  # resources are created; from here on only the service's requests count

    def call(self, method: str, url: str, **kwargs: Any) -> ApiResponse:
        return resolve(self.app, rest_event(method, url, api_key_id=TENANT, **kwargs))

    def counted(self, method: str, url: str, **kwargs: Any) -> tuple[ApiResponse, Counter[str]]:
        self.calls.clear()
        response = self.call(method, url, **kwargs)
        return response, Counter(self.calls)


@pytest.fixture
def stack(aws_adapters: AwsAdapters, aws_clients: AwsClients) -> AwsStack:
    return AwsStack(aws_adapters, aws_clients, backlog_cache_s=60, inline_workflow_bytes=100_000)


def test_submit_and_get_cost_one_request_per_port(stack: AwsStack) -> None:
    first, first_calls = stack.counted("POST", "/v1/jobs", body={"workflow": workflow()})
    second, second_calls = stack.counted("POST", "/v1/jobs", body={"workflow": workflow()})
    job_id = first.json()["job_id"]
    view, get_calls = stack.counted("GET", f"/v1/jobs/{job_id}")

    assert first.status == second.status == 202
    # PutItem creates the job owing its dispatch, UpdateItem clears that once the message and event are out.
    dispatch = {"PutItem": 1, "SendMessage": 1, "PutEvents": 1, "UpdateItem": 1}
    assert first_calls == {"GetQueueAttributes": 1, **dispatch}
    assert second_calls == dispatch  # the depth reading is reused
    assert view.status == 200 and view.json()["status"] == "queued"
    assert get_calls == {"GetItem": 1}
    messages = [m.message() for m in stack.queue.receive(max_messages=10)]
    assert {(m.job_id, m.tenant) for m in messages} == {(job_id, TENANT), (second.json()["job_id"], TENANT)}
    published = stack.adapters.published()
    assert {(e.type, e.job_id) for e in published} >= {(JobEventType.JOB_QUEUED, job_id)}


def test_claim_checks_and_idempotency_cost(aws_adapters: AwsAdapters, aws_clients: AwsClients) -> None:
    stack = AwsStack(aws_adapters, aws_clients, backlog_cache_s=60, inline_workflow_bytes=100)
    graph = workflow()
    graph["5"] = {"class_type": "LoadPicture", "inputs": {"image": "cat.png"}}
    graph["8"] = {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}}
    body = {"workflow": graph, "inputs": {"cat.png": {"base64": base64.b64encode(PNG).decode()}}}
    headers = {"Idempotency-Key": "order-1"}

    first, first_calls = stack.counted("POST", "/v1/jobs", body=body, headers=headers)
    again, again_calls = stack.counted("POST", "/v1/jobs", body=body, headers=headers)

    assert first.status == again.status == 202 and again.json()["job_id"] == first.json()["job_id"]
    assert first_calls == {
        "GetQueueAttributes": 1,
        "PutObject": 2,  # the input, then the workflow
        "TransactWriteItems": 1,  # the job and its idempotency key, together
        "SendMessage": 1,
        "PutEvents": 1,
        "UpdateItem": 1,  # the dispatch is done
    }
    # The replay writes its blobs, loses the conditional create, removes them and reads the original job.
    assert again_calls == {"PutObject": 2, "TransactWriteItems": 1, "DeleteObject": 2, "GetItem": 1}
    job_id = first.json()["job_id"]
    input_key = f"inputs/{TENANT}/{job_id}/{hashlib.sha256(b'cat.png').hexdigest()[:16]}"
    assert stack.adapters.blobs.list() == sorted([input_key, f"workflows/{TENANT}/{job_id}/prompt.json"])


def test_presigned_output_urls_work_against_s3(stack: AwsStack) -> None:
    job_id = stack.call("POST", "/v1/jobs", body={"workflow": workflow()}).json()["job_id"]
    key = f"outputs/{TENANT}/{job_id}/ComfyUI_00001_.png"
    stack.adapters.blobs.put(key, PNG, "image/png")
    now = datetime.now(UTC)
    ref = OutputRef(node_id="9", key=key, filename="ComfyUI_00001_.png", content_type="image/png", size=len(PNG))
    store = stack.adapters.store
    store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING, started_at=now)
    store.transition(job_id, {JobStatus.RUNNING}, JobStatus.SUCCEEDED, finished_at=now, outputs=[ref])

    view, calls = stack.counted("GET", f"/v1/jobs/{job_id}")
    image = stack.call("GET", f"/view?filename=ComfyUI_00001_.png&subfolder={job_id}")

    assert calls == {"GetItem": 1}  # presigning is local
    assert requests.get(view.json()["outputs"][0]["url"], timeout=10).content == PNG
    assert image.status == 200 and image.body == PNG


def test_backlog_limit_reads_the_sqs_depth(aws_adapters: AwsAdapters, aws_clients: AwsClients) -> None:
    stack = AwsStack(aws_adapters, aws_clients, max_backlog=1, backlog_cache_s=0)
    assert stack.call("POST", "/v1/jobs", body={"workflow": workflow()}).status == 202

    refused, calls = stack.counted("POST", "/v1/jobs", body={"workflow": workflow()})

    assert refused.status == 429 and refused.header("Retry-After") == "10"
    assert calls == {"GetQueueAttributes": 1}  # refused before anything is written


@pytest.fixture
def lambda_env(
    aws_clients: AwsClients,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    import_lambda_api: Callable[[], ModuleType],
) -> Iterator[Callable[[], ModuleType]]:
    """Lambda ``api``'s environment on fresh resources; yields its importer (logging put back afterwards)."""
    resources = provision(
        aws_clients.client("s3"),
        aws_clients.client("sqs"),
        aws_clients.client("dynamodb"),
        aws_clients.client("events"),
        "lambda-api",
    )
    env = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "COMFYSERVE_BUCKET": resources.bucket,
        "COMFYSERVE_QUEUE_URL": resources.queue.queue_url,
        "COMFYSERVE_TABLE": resources.table,
        "COMFYSERVE_EVENT_BUS": resources.bus,
        "POWERTOOLS_SERVICE_NAME": "comfyserve-api",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield import_lambda_api
    sys.modules.pop("lambdas.api", None)


def test_lambda_handler_serves_the_route_table(lambda_env: Callable[[], ModuleType]) -> None:
    handler = lambda_env().handler
    context = SimpleNamespace(
        function_name="api",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:api",
        aws_request_id="req-1",
    )
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ComfyUI"}},
    }

    def call(method: str, url: str, **kwargs: Any) -> Any:
        return handler(rest_event(method, url, api_key_id="lambdakey", **kwargs), context)

    submitted = call("POST", "/v1/jobs", body={"workflow": prompt})
    job_id = json.loads(submitted["body"])["job_id"]
    fetched = call("GET", f"/v1/jobs/{job_id}")
    keyless = handler(rest_event("GET", f"/v1/jobs/{job_id}"), context)

    assert submitted["statusCode"] == 202
    assert fetched["statusCode"] == 200 and json.loads(fetched["body"])["status"] == "queued"
    assert keyless["statusCode"] == 401
