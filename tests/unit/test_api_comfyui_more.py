"""ComfyUI's other routes (system and model information, /free, POST /history) and its native job API
(/api/jobs), per tenant, over the local adapters."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiKeyAuthenticator
from comfyserve.contracts.jobs import JobError
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.model_store.published import ListedInventory
from comfyserve.service.job_service import JobService
from tests.api_stack import KEYS, Stack, error_body, make_stack, output_ref, run_job, workflow
from tests.images import png


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


LISTING = {"checkpoints": ["sd15.safetensors", "xl/base.safetensors"], "embeddings": ["easyneg.pt"], "loras": []}


@pytest.fixture(params=["scanned", "published"])
def inventory(request: pytest.FixtureRequest) -> ModelInventory:
    """A local scan's inventory, or the cloud's published one (its names are read on demand)."""
    if request.param == "published":
        return ListedInventory(lambda: LISTING)
    return ModelInventory.from_listing(LISTING)


def with_models(stack: Stack, inventory: ModelInventory) -> Stack:
    """The stack with the packaged catalog and an inventory of model files."""
    deps = dataclasses.replace(stack.service.deps, catalog=Catalog.packaged(), inventory=inventory)
    service = JobService(deps)
    auth = ApiKeyAuthenticator({key: tenant for tenant, key in KEYS.items()})
    return dataclasses.replace(stack, service=service, app=build_app(service, auth))


def upload(stack: Stack, name: str, tenant: str = "tenant-a") -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = stack.call("POST", "/upload/image", tenant=tenant, body=body, headers=headers, binary=True)
    assert response.status == 200, response.json()


def test_object_info_lists_the_inventorys_models_and_the_tenants_uploads(
    stack: Stack, inventory: ModelInventory
) -> None:
    stack = with_models(stack, inventory)
    upload(stack, "cat.png")
    upload(stack, "dog.png", tenant="tenant-b")
    stack.blobs.put("uploads/tenant-a/assets/" + "0" * 64, png(), "image/png")  # a v2 asset's bytes: not listed

    info = stack.call("GET", "/object_info").json()
    one = stack.call("GET", "/object_info/LoadImage", tenant="tenant-b").json()

    ckpt = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert ckpt[0] == ["sd15.safetensors", "xl/base.safetensors"] and ckpt[1]["model_folder"] == "checkpoints"
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == []
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["cat.png"]
    assert one["LoadImage"]["input"]["required"]["image"][0] == ["dog.png"]
    assert stack.service.object_info()["LoadImage"]["input"]["required"]["image"][0] == []  # cache untouched


def test_model_routes(stack: Stack, inventory: ModelInventory) -> None:
    stack = with_models(stack, inventory)

    assert stack.call("GET", "/models").json() == [
        "checkpoints",
        "loras",
        "vae",
        "upscale_models",
        "controlnet",
        "embeddings",
        "text_encoders",
        "diffusion_models",
    ]
    assert stack.call("GET", "/api/models/checkpoints").json() == ["sd15.safetensors", "xl/base.safetensors"]
    assert stack.call("GET", "/embeddings").json() == ["easyneg"]
    missing = stack.call("GET", "/models/nope")
    assert missing.status == 404 and missing.json()["error"]["type"] == "unknown_folder"


def test_system_stats_features_extensions_and_free(stack: Stack) -> None:
    stats = stack.call("GET", "/system_stats").json()

    assert set(stats["system"]) >= {"os", "ram_total", "ram_free", "comfyui_version", "python_version", "argv"}
    assert stats["devices"][0]["type"] == "cpu"
    assert stack.call("GET", "/features").json() == {"supports_preview_metadata": False, "max_upload_size": 104857600}
    assert stack.call("GET", "/extensions").json() == []
    assert stack.call("POST", "/free", body={"unload_models": True}).status == 200
    bad = stack.call("POST", "/free", body={"unload_models": "maybe"})
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_request"
    assert stack.nothing_recorded()


@pytest.mark.parametrize("url", ["/system_stats", "/models", "/api/jobs", "/features"])
def test_the_information_routes_need_a_key(stack: Stack, url: str) -> None:
    assert stack.call("GET", url, tenant=None).status == 401


def submit(stack: Stack, tenant: str = "tenant-a") -> str:
    response = stack.call("POST", "/prompt", tenant=tenant, body={"prompt": workflow()})
    assert response.status == 200, response.json()
    return str(response.json()["prompt_id"])


def test_post_history_removes_entries_but_not_jobs(stack: Stack) -> None:
    first, second, third = submit(stack), submit(stack), submit(stack)
    for job_id in (first, second):
        run_job(stack, job_id, outputs=[])

    assert stack.call("POST", "/history", body={"delete": [first]}).status == 200
    assert list(stack.call("GET", "/history").json()) == [second]
    assert stack.call("GET", f"/history/{first}").json() == {}
    assert stack.call("GET", f"/v1/jobs/{first}").status == 200

    assert stack.call("POST", "/api/history", body={"clear": True}).status == 200
    run_job(stack, third, outputs=[])
    assert list(stack.call("GET", "/history").json()) == [third]


def test_a_dequeued_prompt_never_enters_the_history(stack: Stack) -> None:
    job_id = submit(stack)

    stack.call("POST", "/queue", body={"delete": [job_id]})

    assert stack.call("GET", "/history").json() == {}
    assert stack.call("GET", f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def job_ids(page: dict[str, Any]) -> list[str]:
    return [job["id"] for job in page["jobs"]]


def test_native_jobs_list_filters_sorts_and_pages(stack: Stack) -> None:
    done, failed, pending = submit(stack), submit(stack), submit(stack)
    submit(stack, tenant="tenant-b")
    run_job(stack, done, outputs=[output_ref("tenant-a", done)])
    run_job(stack, failed, error=JobError(type="boom", message="it broke", node_id="3", node_type="Sampler"))

    everything = stack.call("GET", "/api/jobs").json()
    page = stack.call("GET", "/api/jobs?sort_order=asc&limit=2&offset=1").json()
    finished = stack.call("GET", "/api/jobs?status=completed,failed").json()

    assert job_ids(everything) == [pending, failed, done]
    assert everything["pagination"] == {"offset": 0, "limit": None, "total": 3, "has_more": False}
    assert job_ids(page) == [failed, pending] and page["pagination"]["has_more"] is False
    assert job_ids(finished) == [failed, done]
    statuses = {job["id"]: job["status"] for job in everything["jobs"]}
    assert statuses == {done: "completed", failed: "failed", pending: "pending"}
    [done_job] = [job for job in everything["jobs"] if job["id"] == done]
    assert done_job["outputs_count"] == 1
    assert done_job["preview_output"] == {
        "filename": "ComfyUI_00001_.png",
        "subfolder": done,
        "type": "output",
        "nodeId": "9",
        "mediaType": "images",
    }
    [failed_job] = [job for job in everything["jobs"] if job["id"] == failed]
    assert failed_job["execution_error"]["exception_message"] == "it broke"
    bad = stack.call("GET", "/api/jobs?status=done")
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_status"


def test_native_job_detail(stack: Stack) -> None:
    job_id = submit(stack)
    run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])

    job = stack.call("GET", f"/api/jobs/{job_id}").json()

    assert job["status"] == "completed"
    assert job["outputs"] == stack.call("GET", f"/history/{job_id}").json()[job_id]["outputs"]
    assert job["execution_status"]["status_str"] == "success"
    assert job["workflow"]["prompt"]["9"]["class_type"] == "Save"
    assert stack.call("GET", f"/api/jobs/{job_id}", tenant="tenant-b").status == 404


def test_native_cancel_dequeues_interrupts_and_is_idempotent(stack: Stack) -> None:
    pending, running = submit(stack), submit(stack)
    run_job(stack, running)

    assert stack.call("POST", f"/api/jobs/{pending}/cancel").json() == {"id": pending, "status": "cancelled"}
    assert stack.call("POST", f"/api/jobs/{running}/cancel").json() == {"id": running, "status": "in_progress"}
    assert stack.call("GET", f"/v1/jobs/{running}").json()["cancel_requested"] is True
    assert stack.call("POST", f"/api/jobs/{pending}/cancel").json() == {"id": pending, "status": "cancelled"}
    assert stack.call("POST", "/api/jobs/nope/cancel").json() == {"id": "nope", "status": "unknown"}
    other = stack.call("POST", f"/api/jobs/{running}/cancel", tenant="tenant-b").json()
    assert other == {"id": running, "status": "unknown"}


def test_native_batch_cancel_is_all_or_nothing(stack: Stack) -> None:
    first, second = submit(stack), submit(stack)

    refused = stack.call("POST", "/api/jobs/cancel", body={"job_ids": [first, "nope"]})
    assert refused.status == 404
    assert refused.json() == error_body("job_not_found", "Job not found", "no job 'nope'; nothing was cancelled")
    assert stack.call("GET", f"/v1/jobs/{first}").json()["status"] == "queued"

    done = stack.call("POST", "/api/jobs/cancel", body={"job_ids": [first, second]}).json()
    assert done == {"jobs": [{"id": first, "status": "cancelled"}, {"id": second, "status": "cancelled"}]}
