"""``comfyserve serve --backend comfyui`` on the fake ComfyUI (tests/unit/fake_comfyui): the workers run a managed
ComfyUI each and publish its catalog; the edge then accepts ComfyUI's node classes and refuses unknown ones with
ComfyUI's error before anything is queued."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from comfyserve.localstack.stack import LocalStack
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY
from tests.integration.stack_helpers import Api, wait_for

KEY = "alice-key"
FAKE_DIR = Path(__file__).parents[1] / "unit" / "fake_comfyui"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("comfyui-stack")
    with LocalStack(
        data_dir, port=0, workers=1, api_keys={"alice": KEY}, backend="comfyui", comfyui_dir=FAKE_DIR
    ) as local:
        local.wait_ready()
        yield local


@pytest.fixture(scope="module")
def alice(stack: LocalStack) -> Api:
    return Api(stack.url, KEY)


def workflow(mode: str = "ok") -> dict[str, Any]:
    return {
        "2": {"class_type": "FakeGenerate", "inputs": {"mode": mode, "steps": 2}},
        "3": {"class_type": "FakeSave", "inputs": {"images": ["2", 0], "filename_prefix": "out"}},
    }


def test_while_comfyui_starts_health_says_so_and_a_workflow_is_answered_503_not_400(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_COMFYUI_START_S", "3")
    with LocalStack(
        tmp_path, port=0, workers=1, api_keys={"alice": KEY}, backend="comfyui", comfyui_dir=FAKE_DIR
    ) as local:
        api = Api(local.url, KEY)
        health = requests.get(f"{local.url}/v1/health", timeout=10).json()
        assert health["status"] == "starting"
        answer = api.http.post(f"{local.url}/prompt", json={"prompt": workflow()}, timeout=10)
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert answer.json()["error"]["type"] == "starting"
        assert local.adapters.queue.approximate_depth().total == 0 and local.adapters.store.list("alice")[0] == []
        local.wait_ready()
        wait_for(lambda: requests.get(f"{local.url}/v1/health", timeout=10).json()["status"] == "ok" or None)
        assert api.http.post(f"{local.url}/prompt", json={"prompt": workflow()}, timeout=10).status_code == 200


def test_a_job_runs_on_the_workers_comfyui(stack: LocalStack, alice: Api) -> None:
    assert stack.adapters.blobs.head(DEFAULT_CATALOG_KEY) is not None  # published by the worker at start
    job_id = alice.submit(workflow())  # FakeGenerate and FakeSave are only in the published catalog
    view = alice.wait_status(job_id)
    assert view["status"] == "succeeded", view
    assert [o["filename"] for o in view["outputs"]] == ["out_00001_.png"]
    download = requests.get(view["outputs"][0]["url"], timeout=10)
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")


def test_object_info_is_served_as_comfyui_serves_it(stack: LocalStack, alice: Api) -> None:
    spec = importlib.util.spec_from_file_location("fake_comfyui_main", FAKE_DIR / "main.py")
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    served = alice.http.get(f"{stack.url}/object_info", timeout=10).json()
    assert list(served) == list(fake.OBJECT_INFO)
    assert served["FakeGenerate"] == fake.OBJECT_INFO["FakeGenerate"]  # display_name null, tooltips, flags kept


def test_the_edge_refuses_a_node_comfyui_does_not_have(stack: LocalStack, alice: Api) -> None:
    depth = stack.adapters.queue.approximate_depth().total
    prompt = {**workflow(), "9": {"class_type": "KSampler", "inputs": {}}}  # comfyserve's, not this ComfyUI's
    answer = alice.http.post(f"{stack.url}/prompt", json={"prompt": prompt}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "type": "invalid_prompt",
        "message": "Cannot execute because node KSampler does not exist.",
        "details": "Node ID '#9'",
        "extra_info": {},
    }
    assert stack.adapters.queue.approximate_depth().total == depth


def test_previews_and_text_outputs_reach_history_and_view(stack: LocalStack, alice: Api) -> None:
    nodes = workflow()
    nodes["3"]["inputs"].update({"extra_kinds": True, "filename_prefix": "kinds"})
    answer = alice.http.post(f"{stack.url}/prompt", json={"prompt": nodes}, timeout=10)
    prompt_id = answer.json()["prompt_id"]
    assert alice.wait_status(prompt_id)["status"] == "succeeded"
    outputs = alice.http.get(f"{stack.url}/history/{prompt_id}", timeout=10).json()[prompt_id]["outputs"]["3"]
    assert outputs["text"] == ["not a file"]  # a non-file UI output, as ComfyUI's history has it
    [preview] = [image for image in outputs["images"] if image["type"] == "temp"]
    view = alice.http.get(f"{stack.url}/view", params=preview, timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
    manifest = alice.http.get(f"{stack.url}/v1/jobs/{prompt_id}", timeout=10).json()
    assert {o["filename"] for o in manifest["outputs"]} >= {preview["filename"], "kinds_00001_.png"}


def test_a_cancel_ends_a_running_job_within_a_fraction_of_a_second(stack: LocalStack, alice: Api) -> None:
    job_id = alice.submit(workflow("slow"))  # progress until /interrupt
    wait_for(lambda: (alice.job(job_id).get("progress") or {}).get("step"), what="a progress step")
    started = time.monotonic()
    assert alice.http.post(f"{stack.url}/v1/jobs/{job_id}/cancel", timeout=10).status_code == 202
    assert alice.wait_status(job_id)["status"] == "cancelled"
    assert time.monotonic() - started < 1.0  # the worker reads the record every 0.1 s; ComfyUI stops at once
