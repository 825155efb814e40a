"""Comfy API v2 (comfy-sdk's API) over the local adapters: the job object, Idempotency-Key, metadata filters,
cancel, the event snapshot, the workflow, assets (upload, by hash, from hash, content with Range, delete),
core/ASSET references, and the v2 error envelope. comfy-sdk itself runs against `comfyserve serve` in
tests/e2e/test_comfy_sdk.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3

from comfyserve.contracts.jobs import JobError, JobStatus, Progress
from tests.api_stack import Stack, make_stack, output_ref, run_job, workflow
from tests.images import png


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


def submit(stack: Stack, body: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    response = stack.call("POST", "/api/v2/jobs", body=body or {"workflow": workflow()}, **kwargs)
    assert response.status == 201, response.json()
    return dict(response.json())


def envelope(code: str) -> Any:
    return lambda body: body["error"]["code"] == code and set(body) == {"error"}


def test_submit_answers_201_with_the_full_job(stack: Stack) -> None:
    job = submit(stack, {"workflow": workflow(), "metadata": {"suite": "a"}})

    assert job["status"] == "queued" and job["queue_position"] == 1
    assert job["outputs"] == [] and job["error"] is None and job["progress"] is None
    assert job["metadata"] == {"suite": "a"}
    assert job["urls"] == {
        "self": f"/prod/api/v2/jobs/{job['id']}",  # the stage the request came through
        "events": f"/prod/api/v2/jobs/{job['id']}/events",
        "cancel": f"/prod/api/v2/jobs/{job['id']}/cancel",
    }
    assert stack.call("GET", f"/api/v2/jobs/{job['id']}").json() == job


def test_a_finished_job_has_its_outputs_as_assets(stack: Stack) -> None:
    job_id = submit(stack)["id"]
    run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id, size=100)])

    job = stack.call("GET", f"/api/v2/jobs/{job_id}").json()
    [output] = job["outputs"]

    assert job["status"] == "succeeded" and job["completed_at"] is not None
    assert {k: output[k] for k in ("node_id", "name", "type", "content_type", "size_bytes", "id", "job_id")} == {
        "node_id": "9",
        "name": "ComfyUI_00001_.png",
        "type": "image",
        "content_type": "image/png",
        "size_bytes": 100,
        "id": f"out.{job_id}.0",
        "job_id": job_id,
    }
    asset = stack.call("GET", f"/api/v2/assets/out.{job_id}.0").json()
    assert asset["job_id"] == job_id and asset["size_bytes"] == 100
    content = stack.call("GET", f"/api/v2/assets/out.{job_id}.0/content", headers={"Range": "bytes=0-7"})
    assert content.status == 206 and content.body == b"\x89PNG\r\n\x1a\n"
    assert content.header("Content-Range") == "bytes 0-7/100"


def test_statuses(stack: Stack) -> None:
    running, failed, queued = submit(stack)["id"], submit(stack)["id"], submit(stack)["id"]
    run_job(stack, running)
    stack.jobs.update_progress(running, Progress(node="3", step=5, max=20, nodes_done=1, nodes_total=3))
    run_job(stack, failed, error=JobError(type="node_error", message="boom", node_id="3", node_type="Sampler"))

    def get(job_id: str) -> dict[str, Any]:
        return dict(stack.call("GET", f"/api/v2/jobs/{job_id}").json())

    assert get(running)["progress"]["value"] == pytest.approx((1 + 5 / 20) / 3)
    assert get(failed)["error"] == {"code": "node_error", "message": "boom", "node_id": "3", "class_type": "Sampler"}
    assert stack.call("POST", f"/api/v2/jobs/{running}/cancel").json()["status"] == "canceling"
    assert stack.call("POST", f"/api/v2/jobs/{queued}/cancel").json()["status"] == "canceled"
    assert stack.call("POST", f"/api/v2/jobs/{failed}/cancel").json()["status"] == "failed"  # idempotent


def test_an_idempotency_key_is_never_used_twice(stack: Stack) -> None:
    headers = {"Idempotency-Key": "key-1"}
    job_id = submit(stack, headers=headers)["id"]

    again = stack.call("POST", "/api/v2/jobs", body={"workflow": workflow()}, headers=headers)

    assert again.status == 422 and envelope("idempotency_key_reuse")(again.json())
    assert again.json()["error"]["details"]["job_id"] == job_id
    assert len(stack.jobs.list("tenant-a")[0]) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"workflow": workflow(steps=-1)}, 422, "invalid_workflow"),
        ({"workflow": {"nodes": [], "links": []}}, 422, "workflow_format_ui"),
        ({"workflow": workflow(), "metadata": {str(i): "x" for i in range(17)}}, 422, "metadata_invalid"),
        ({"workflow": workflow(), "metadata": {"n": 1}}, 400, "invalid_request"),
        ({"nothing": 1}, 400, "invalid_request"),
        (
            {
                "workflow": {
                    **workflow(),
                    "5": {
                        "class_type": "LoadPicture",
                        "inputs": {
                            "image": {"__type": "core/ASSET", "info": {"id": "00000000-0000-0000-0000-000000000000"}}
                        },
                    },
                }
            },
            422,
            "missing_asset",
        ),
    ],
)
def test_refusals_use_the_v2_envelope_and_record_nothing(
    stack: Stack, body: dict[str, Any], status: int, code: str
) -> None:
    response = stack.call("POST", "/api/v2/jobs", body=body)

    assert response.status == status and envelope(code)(response.json()), response.json()
    assert stack.nothing_recorded()


def test_invalid_workflow_details_carry_comfyuis_node_errors(stack: Stack) -> None:
    response = stack.call("POST", "/api/v2/jobs", body={"workflow": workflow(steps=-1)})

    assert response.json()["error"]["details"]["node_errors"]["3"]["class_type"] == "Sampler"


def test_auth_and_not_found_in_the_v2_envelope(stack: Stack) -> None:
    assert envelope("unauthorized")(stack.call("GET", "/api/v2/jobs", tenant=None).json())
    job_id = submit(stack)["id"]
    other = stack.call("GET", f"/api/v2/jobs/{job_id}", tenant="tenant-b")
    assert other.status == 404 and envelope("not_found")(other.json())


def test_list_filters_by_metadata_and_pages_with_a_cursor(stack: Stack) -> None:
    first = submit(stack, {"workflow": workflow(), "metadata": {"suite": "x"}})["id"]
    submit(stack, {"workflow": workflow(seed=2)})
    third = submit(stack, {"workflow": workflow(seed=3), "metadata": {"suite": "x"}})["id"]

    filtered = stack.call("GET", "/api/v2/jobs?metadata%5Bsuite%5D=x").json()
    page = stack.call("GET", "/api/v2/jobs?limit=2").json()
    rest = stack.call("GET", f"/api/v2/jobs?limit=2&cursor={page['next_cursor']}").json()

    assert [job["id"] for job in filtered["jobs"]] == [third, first] and "next_cursor" not in filtered
    assert len(page["jobs"]) == 2 and [job["id"] for job in rest["jobs"]] == [first]
    assert set(filtered["jobs"][0]) >= {"id", "status", "create_time", "update_time", "metadata"}


def test_events_are_a_snapshot_that_ends_with_the_terminal_status(stack: Stack) -> None:
    job_id = submit(stack)["id"]
    queued = stack.call("GET", f"/api/v2/jobs/{job_id}/events")
    run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])
    done = stack.call("GET", f"/api/v2/jobs/{job_id}/events")

    assert queued.header("Content-Type") == "text/event-stream"
    assert queued.body.decode() == 'event: status\ndata: {"status":"queued","queue_position":1}\n\n'
    frames = done.body.decode().strip().split("\n\n")
    assert [frame.split("\n")[0] for frame in frames] == ["event: output", "event: status"]
    assert frames[-1].endswith('{"status":"succeeded","queue_position":null}')


def test_workflow_of_a_job(stack: Stack) -> None:
    job_id = submit(stack)["id"]

    body = stack.call("GET", f"/api/v2/jobs/{job_id}/workflow").json()

    assert body["format"] == "api" and body["workflow"]["3"]["inputs"]["steps"] == 20


def upload(stack: Stack, data: bytes, expected: str | None = None, tenant: str = "tenant-a") -> Any:
    boundary = "b0undary"
    fields = {"content_type": "image/png", "file_path": "cat.png", **({"expected_hash": expected} if expected else {})}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    body += (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="cat.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return stack.call("POST", "/api/v2/assets", body=body, headers=headers, binary=True, tenant=tenant)


def test_assets_upload_dedup_from_hash_content_and_delete(stack: Stack) -> None:
    data = png()
    digest = "blake3:" + blake3(data).hexdigest()

    created = upload(stack, data, expected=digest)
    assert created.status == 201
    asset = created.json()
    assert (asset["hash"], asset["size_bytes"], asset["created_new"], asset["file_path"]) == (
        digest,
        len(data),
        True,
        "cat.png",
    )
    assert stack.call("HEAD", f"/api/v2/assets/by-hash/{digest}").status == 200
    assert stack.call("HEAD", f"/api/v2/assets/by-hash/{digest}", tenant="tenant-b").status == 404  # per tenant
    twin = stack.call("POST", "/api/v2/assets/from-hash", body={"hash": digest, "file_path": "dog.png"})
    assert twin.status == 201 and twin.json()["created_new"] is False and twin.json()["id"] != asset["id"]

    whole = stack.call("GET", f"/api/v2/assets/{asset['id']}/content")
    tail = stack.call("GET", f"/api/v2/assets/{asset['id']}/content", headers={"Range": "bytes=-4"})
    assert whole.status == 200 and whole.body == data
    assert tail.status == 206 and tail.body == data[-4:]
    beyond = stack.call("GET", f"/api/v2/assets/{asset['id']}/content", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status == 416 and beyond.header("Content-Range") == f"bytes */{len(data)}"

    assert stack.call("DELETE", f"/api/v2/assets/{asset['id']}").status == 204
    assert stack.call("GET", f"/api/v2/assets/{asset['id']}").status == 404
    assert stack.call("HEAD", f"/api/v2/assets/by-hash/{digest}").status == 200  # the twin still holds them
    assert stack.call("DELETE", f"/api/v2/assets/{twin.json()['id']}").status == 204
    assert stack.call("HEAD", f"/api/v2/assets/by-hash/{digest}").status == 404


def test_a_hash_mismatch_stores_nothing(stack: Stack) -> None:
    response = upload(stack, png(), expected="blake3:" + "0" * 64)

    assert response.status == 409 and envelope("hash_mismatch")(response.json())
    assert stack.blobs.list() == []


def test_an_image_asset_over_the_pixel_cap_is_refused_by_its_header_and_stores_nothing(stack: Stack) -> None:
    response = upload(stack, png((4097, 4096), "1"))

    assert response.status == 400
    assert response.json() == {
        "error": {
            "code": "invalid_request",
            "message": "Image too large: 'cat.png' is 4097x4096, over the limit of 16,777,216 pixels",
            "details": {"type": "image_too_large"},
        }
    }
    assert stack.blobs.list() == []


def test_from_hash_of_bytes_never_uploaded_is_404(stack: Stack) -> None:
    response = stack.call("POST", "/api/v2/assets/from-hash", body={"hash": "blake3:" + "a" * 64})

    assert response.status == 404 and envelope("blob_not_found")(response.json())


def test_an_asset_reference_becomes_the_jobs_input(stack: Stack) -> None:
    asset = upload(stack, png()).json()
    graph = {
        "5": {"class_type": "LoadPicture", "inputs": {"image": {"__type": "core/ASSET", "info": {"id": asset["id"]}}}},
        "8": {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}},
    }

    job = submit(stack, {"workflow": graph})

    record = stack.jobs.get("tenant-a", job["id"])
    assert record is not None and record.status is JobStatus.QUEUED
    name = f"asset-{asset['id']}.png"
    assert record.workflow is not None and record.workflow["5"]["inputs"]["image"] == name
    assert record.inputs[name].key == f"uploads/tenant-a/assets/{asset['hash'].removeprefix('blake3:')}"
    foreign = stack.call("POST", "/api/v2/jobs", body={"workflow": graph}, tenant="tenant-b")
    assert foreign.status == 422 and envelope("missing_asset")(foreign.json())
