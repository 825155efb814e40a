"""Lambda ``api`` on moto with a models bucket: a workflow is checked against the published model inventory
(``COMFYSERVE_MODELS_BUCKET``) before anything is written, as ComfyUI checks its model folders."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from comfyserve.adapters.aws.provision import create_bucket
from comfyserve.model_store.sync import sync
from tests.apigw import rest_event
from tests.integration.conftest import AwsClients
from tests.integration.drop_stack import DropStack
from tests.integration.lambda_events import context, fresh_import

TENANT = "modelkey"
PUBLISHED = "published.safetensors"


@pytest.fixture
def stack(moto_endpoint: str, aws_session: boto3.Session) -> DropStack:
    return DropStack(AwsClients(moto_endpoint, aws_session), moto_endpoint)


@pytest.fixture
def api(stack: DropStack) -> Iterator[ModuleType]:
    """Lambda ``api`` imported with the stack's settings and a models bucket whose inventory lists one checkpoint."""
    models = f"{stack.prefix}-models"
    create_bucket(stack.s3, models)
    weights = os.urandom(1024)
    metadata = {"sha256": hashlib.sha256(weights).hexdigest()}
    stack.s3.put_object(Bucket=models, Key=f"checkpoints/{PUBLISHED}", Body=weights, Metadata=metadata)
    sync(stack.s3, models, "inventory.json")
    with pytest.MonkeyPatch.context() as patch:
        stack.setenv(patch, COMFYSERVE_MODELS_BUCKET=models)
        yield fresh_import("lambdas.api")


def submit(api: ModuleType, ckpt_name: str) -> tuple[int, Any]:
    workflow = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "m"}},
    }
    event = rest_event("POST", "/v1/jobs", body={"workflow": workflow}, api_key_id=TENANT)
    answer = api.handler(event, context("api"))
    return answer["statusCode"], json.loads(answer["body"])


def test_an_unknown_checkpoint_is_refused_and_a_published_one_accepted(
    stack: DropStack, api: ModuleType, aws_clients: AwsClients
) -> None:
    status, body = submit(api, "missing.safetensors")

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

    status, body = submit(api, PUBLISHED)

    assert status == 202 and body["status"] == "queued"
    assert stack.queue_depth() == 1
