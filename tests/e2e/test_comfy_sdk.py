"""comfy-sdk (Comfy's own SDK for the Comfy API v2), unchanged, against the local server: submit, events,
outputs, assets (upload, dedup by hash, as a workflow input), list with metadata, cancel and errors.

comfy-sdk (pinned in the dev dependencies) selects a self-hosted deployment with COMFY_BASE_URL and sends its
key as a Bearer token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comfy_sdk
import pytest
from PIL import Image

from comfyserve.localstack.stack import LocalStack
from tests.images import png
from tests.integration.stack_helpers import IMAGE_ONLY, IMAGE_PACKS, STACK_NODES, wait_for, wait_workflow

KEY = "sdk-key"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data_dir = tmp_path_factory.mktemp("sdk")
    with LocalStack(
        data_dir, port=0, workers=1, api_keys={"sdk": KEY}, custom_nodes=[STACK_NODES], node_packs=IMAGE_PACKS
    ) as stack:
        stack.wait_ready()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("COMFY_BASE_URL", stack.url)
            env.setenv("COMFY_API_KEY", KEY)
            with comfy_sdk.Comfy() as comfy:
                yield comfy


def test_submit_stream_events_and_download_outputs(client: Any, tmp_path: Path) -> None:
    job = client.submit(client.workflows.from_json(json.loads(IMAGE_ONLY.read_text())), metadata={"suite": "sdk"})

    events = list(job.events())
    job.wait(timeout=60)

    assert isinstance(events[-1], comfy_sdk.StatusChange) and events[-1].status == "succeeded"
    assert sum(isinstance(event, comfy_sdk.OutputReady) for event in events) == 2
    assert job.status == "succeeded"
    outputs = sorted(job.outputs, key=lambda output: output.name)
    assert [output.name for output in outputs] == ["mask_00001_.png", "outpaint_00001_.png"]
    path = outputs[0].to_file(tmp_path / outputs[0].name)
    assert Image.open(path).size == (320, 256)
    assert job.get_workflow().format == "api"
    assert [summary.id for summary in client.list_jobs(metadata={"suite": "sdk"})] == [job.id]


def test_an_uploaded_asset_feeds_a_workflow(client: Any) -> None:
    asset = client.assets.from_bytes(png((8, 8), color=(200, 40, 10)), filename="red.png", content_type="image/png")
    twin = client.assets.from_bytes(png((8, 8), color=(200, 40, 10)), filename="again.png", content_type="image/png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": asset}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "from_asset"}},
    }

    job = client.submit(client.workflows.from_json(graph))
    job.wait(timeout=60)
    twin.commit()

    assert job.status == "succeeded"
    assert asset.hash == twin.hash and asset.id != twin.id  # the second one reused the bytes (by hash)
    twin.delete()


def test_cancel_a_running_job(client: Any) -> None:
    job = client.submit(client.workflows.from_json(wait_workflow(30, steps=30, color=4242)))
    wait_for(lambda: job.refresh().status == "running", timeout_s=30, what="the job to run")

    job.cancel()
    assert job.status in ("canceling", "canceled")
    job.wait(timeout=60)

    assert job.status == "canceled"


def test_errors_are_the_sdks_typed_exceptions(client: Any) -> None:
    graph = json.loads(IMAGE_ONLY.read_text())
    graph["1"]["inputs"]["width"] = -1

    with pytest.raises(comfy_sdk.InvalidWorkflow):
        client.submit(client.workflows.from_json(graph))
    with pytest.raises(comfy_sdk.NotFound):
        client.jobs.get("no-such-job")
