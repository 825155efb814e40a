"""Lambda ``api`` on moto (API Gateway proxy events with ``requestContext.identity.apiKeyId``): a workflow is
checked against the published model inventory (``COMFYSERVE_MODELS_BUCKET``) before anything is written, and
the service's log lines go out through the Powertools Logger, with the job id once a route knows it."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import boto3
import pytest

from comfyserve.adapters.aws.provision import create_bucket
from comfyserve.model_store.sync import sync
from tests.apigw import read_response, rest_event
from tests.integration.conftest import AwsClients
from tests.integration.drop_stack import DropStack
from tests.integration.lambda_events import context
from tests.integration.stack_helpers import image_only

TENANT = "apikey1"
PUBLISHED = "published.safetensors"

LambdaApi = Callable[..., ModuleType]


@pytest.fixture
def stack(moto_endpoint: str, aws_session: boto3.Session) -> DropStack:
    return DropStack(AwsClients(moto_endpoint, aws_session), moto_endpoint)


@pytest.fixture
def lambda_api(stack: DropStack, import_lambda_api: Callable[[], ModuleType]) -> LambdaApi:
    """``lambda_api(**env)``: Lambda ``api`` imported with the stack's settings and ``env`` (the process's
    logging is put back after the module's tests)."""

    def load(**env: str) -> ModuleType:
        with pytest.MonkeyPatch.context() as patch:
            stack.setenv(patch, **env)
            return import_lambda_api()

    return load


def call(api: ModuleType, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    answer = api.handler(rest_event(method, path, body=body, api_key_id=TENANT), context("api"))
    return answer["statusCode"], json.loads(answer["body"])


def checkpoint_workflow(ckpt_name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "m"}},
    }


def test_an_unknown_checkpoint_is_refused_and_a_published_one_accepted(
    stack: DropStack, lambda_api: LambdaApi, aws_clients: AwsClients
) -> None:
    models = f"{stack.prefix}-models"
    create_bucket(stack.s3, models)
    weights = os.urandom(1024)
    metadata = {"sha256": hashlib.sha256(weights).hexdigest()}
    stack.s3.put_object(Bucket=models, Key=f"checkpoints/{PUBLISHED}", Body=weights, Metadata=metadata)
    sync(stack.s3, models, "inventory.json")
    api = lambda_api(COMFYSERVE_MODELS_BUCKET=models)

    status, body = call(api, "POST", "/v1/jobs", {"workflow": checkpoint_workflow("missing.safetensors")})

    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    [error] = body["node_errors"]["1"]["errors"]
    assert (error["type"], error["details"]) == (
        "value_not_in_list",
        f"ckpt_name: 'missing.safetensors' not in ['{PUBLISHED}']",
    )
    assert error["extra_info"]["received_value"] == "missing.safetensors"
    table = stack.resources.table
    assert stack.queue_depth() == 0 and aws_clients.client("dynamodb").scan(TableName=table)["Count"] == 0
    assert stack.s3.list_objects_v2(Bucket=stack.resources.bucket)["KeyCount"] == 0

    status, body = call(api, "POST", "/v1/jobs", {"workflow": checkpoint_workflow(PUBLISHED)})

    assert status == 202 and body["status"] == "queued"
    assert stack.queue_depth() == 1


def test_a_models_bucket_without_a_published_inventory_is_a_retryable_503(
    stack: DropStack, lambda_api: LambdaApi, aws_clients: AwsClients
) -> None:
    models = f"{stack.prefix}-models"
    create_bucket(stack.s3, models)  # no `comfyserve models sync` yet
    api = lambda_api(COMFYSERVE_MODELS_BUCKET=models)

    event = rest_event("POST", "/v1/jobs", body={"workflow": checkpoint_workflow(PUBLISHED)}, api_key_id=TENANT)
    answer = read_response(api.handler(event, context("api")))

    assert (answer.status, answer.header("Retry-After")) == (503, "1")
    assert answer.json() == {
        "error": {
            "type": "service_unavailable",
            "message": "The model inventory is not published yet",
            "details": "run `comfyserve models sync`",
            "extra_info": {},
        },
        "node_errors": {},
    }
    table = stack.resources.table
    assert stack.queue_depth() == 0 and aws_clients.client("dynamodb").scan(TableName=table)["Count"] == 0
    assert stack.s3.list_objects_v2(Bucket=stack.resources.bucket)["KeyCount"] == 0


def test_a_log_line_carries_the_job_id_once_the_route_knows_it(stack: DropStack, lambda_api: LambdaApi) -> None:
    api = lambda_api(COMFYSERVE_EVENT_BUS=f"{stack.prefix}-missing")  # every job event fails and is logged
    handler = api.logger.registered_handler
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        first = call(api, "POST", "/v1/jobs", {"workflow": image_only()})[1]["job_id"]
        call(api, "POST", f"/v1/jobs/{first}/cancel")
        second = call(api, "POST", "/v1/jobs", {"workflow": image_only()})[1]["job_id"]
    finally:
        handler.setStream(previous)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    owed = "was not published; the reconciler will publish it"
    assert [(line["message"], line.get("job_id"), line["name"]) for line in lines] == [
        # inside the submit, before the route has the id
        (f"JobQueued for job {first} {owed}", None, "comfyserve.service.reconcile"),
        (f"JobCancelled for job {first} was not published", first, "comfyserve.service.jobs"),
        # the previous request's id is gone
        (f"JobQueued for job {second} {owed}", None, "comfyserve.service.reconcile"),
    ]
    assert all(line["service"] == "comfyserve-api" for line in lines)
