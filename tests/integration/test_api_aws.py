"""The newer routes through the route table on the AWS adapters (moto server over HTTP, API Gateway's key id
as the tenant): Comfy API v2 jobs and assets on S3/DynamoDB/SQS, ComfyUI's native job API and information
routes, and the edge's refusals, which leave S3, DynamoDB, SQS and the bus untouched."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from blake3 import blake3

from tests.api_stack import workflow
from tests.images import png
from tests.integration.conftest import AwsAdapters, AwsClients
from tests.integration.test_service_aws import TENANT, AwsStack

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def stack(aws_adapters: AwsAdapters, aws_clients: AwsClients) -> AwsStack:
    return AwsStack(aws_adapters, aws_clients, inline_workflow_bytes=100_000)


def untouched(stack: AwsStack) -> bool:
    return (
        stack.queue.approximate_depth().total == 0
        and not stack.adapters.store.list(TENANT)[0]
        and not stack.adapters.blobs.list()
        and not stack.adapters.published()
    )


def test_v2_job_lifecycle(stack: AwsStack) -> None:
    submitted = stack.call("POST", "/api/v2/jobs", body={"workflow": workflow(), "metadata": {"run": "moto"}})
    job_id = submitted.json()["id"]

    listed = stack.call("GET", "/api/v2/jobs?metadata%5Brun%5D=moto").json()
    events = stack.call("GET", f"/api/v2/jobs/{job_id}/events")
    canceled = stack.call("POST", f"/api/v2/jobs/{job_id}/cancel").json()

    assert submitted.status == 201 and submitted.json()["status"] == "queued"
    assert [job["id"] for job in listed["jobs"]] == [job_id]
    assert events.body.decode().startswith('event: status\ndata: {"status":"queued"')
    assert canceled["status"] == "canceled"
    assert stack.call("GET", f"/api/jobs/{job_id}").json()["status"] == "cancelled"  # ComfyUI's spelling


def test_v2_assets_on_s3(stack: AwsStack) -> None:
    data = png(color=(9, 9, 9))
    digest = "blake3:" + blake3(data).hexdigest()
    boundary = "xyz"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    asset = stack.call("POST", "/api/v2/assets", body=body, headers=headers, binary=True).json()
    probe = stack.call("HEAD", f"/api/v2/assets/by-hash/{digest}")
    part = stack.call("GET", f"/api/v2/assets/{asset['id']}/content", headers={"Range": "bytes=1-3"})
    graph = {
        "5": {"class_type": "LoadPicture", "inputs": {"image": {"__type": "core/ASSET", "info": {"id": asset["id"]}}}},
        "8": {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}},
    }
    job = stack.call("POST", "/api/v2/jobs", body={"workflow": graph})

    assert asset["hash"] == digest and probe.status == 200
    assert part.status == 206 and part.body == data[1:4]
    assert job.status == 201, job.json()
    record = stack.adapters.store.get(TENANT, job.json()["id"])
    assert record is not None
    [ref] = record.inputs.values()
    assert ref.key is not None and stack.adapters.blobs.get(ref.key) == data


def test_comfyui_information_routes(stack: AwsStack) -> None:
    info = stack.call("GET", "/api/object_info/Sampler").json()
    stats = stack.call("GET", "/api/system_stats").json()
    jobs = stack.call("GET", "/api/jobs").json()

    assert list(info["Sampler"]["input"]["required"])[:3] == ["model", "seed", "steps"]
    assert stats["devices"][0]["type"] == "cpu"
    assert jobs == {"jobs": [], "pagination": {"offset": 0, "limit": None, "total": 0, "has_more": False}}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/jobs", b"[" * 50_000 + b"]" * 50_000, 400),
        ("POST", "/prompt", b'{"prompt": "\xff"}', 400),
        ("POST", "/api/v2/jobs", b"[" * 50_000 + b"]" * 50_000, 400),
        ("PATCH", "/v1/jobs", b"{}", 405),
        ("POST", "/api/v2/jobs", b'{"workflow": {"nodes": [], "links": []}}', 422),
    ],
)
def test_the_edge_refuses_before_anything_is_written(
    stack: AwsStack, method: str, path: str, body: bytes, status: int
) -> None:
    response = stack.call(method, path, body=body, headers=JSON, binary=True)

    assert response.status == status, response.json()
    assert untouched(stack)


def test_an_image_input_that_is_not_an_image_writes_nothing(stack: AwsStack) -> None:
    graph: dict[str, Any] = {
        "5": {"class_type": "LoadPicture", "inputs": {"image": "cat.png"}},
        "8": {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}},
    }
    inputs = {"cat.png": {"base64": base64.b64encode(b"not an image").decode()}}

    response = stack.call("POST", "/v1/jobs", body={"workflow": graph, "inputs": inputs})

    assert response.status == 400 and response.json()["error"]["type"] == "invalid_image"
    assert untouched(stack)
