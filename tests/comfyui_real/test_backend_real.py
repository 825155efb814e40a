"""The ComfyUI backend against a real ComfyUI on the CPU: core, extras and custom-pack workflows, progress,
cancellation through /interrupt, a crash mid-job, warm caches, and the exported catalog at the edge."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.validation import validate_prompt
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIRestarted
from comfyserve.worker.comfyui.client import ComfyUIHTTPError
from tests.comfyui_real.conftest import COMPAT, FIGURES
from tests.comfyui_real.prompts import steps_prompt


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]


def job(tmp_path: Path, prompt: dict[str, Any], **fields: Any) -> BackendJob:
    return BackendJob(job_id=f"real-{time.monotonic_ns()}", prompt=prompt, work_dir=tmp_path / "job", **fields)


def pixel(path: Path) -> tuple[int, ...]:
    with Image.open(path) as image:
        return tuple(image.convert("RGB").getpixel((0, 0)))  # type: ignore[arg-type]


def test_a_core_workflow_writes_its_image(backend: ComfyUIBackend, tmp_path: Path) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0x102030}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "core"}},
    }
    result = backend.run(job(tmp_path, prompt))
    assert result.status == "success", result.error
    assert [o.relative_name for o in result.outputs] == ["core_00001_.png"]
    with Image.open(result.outputs[0].path) as image:
        assert image.size == (16, 8)
    assert pixel(result.outputs[0].path) == (255 - 0x10, 255 - 0x20, 255 - 0x30)


def test_an_extras_node_and_an_uploaded_input(backend: ComfyUIBackend, tmp_path: Path) -> None:
    upload = tmp_path / "upload.png"
    Image.new("RGB", (8, 8), (200, 100, 0)).save(upload)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "my photo.png"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "3": {  # comfy_extras/nodes_post_processing.py
            "class_type": "ImageBlend",
            "inputs": {"image1": ["1", 0], "image2": ["2", 0], "blend_factor": 0.5, "blend_mode": "normal"},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "extras/blend"}},
    }
    result = backend.run(job(tmp_path, prompt, inputs={"my photo.png": upload}))
    assert result.status == "success", result.error
    assert [o.relative_name for o in result.outputs] == ["extras/blend_00001_.png"]
    assert pixel(result.outputs[0].path) == (100, 50, 0)


def test_a_custom_pack_from_a_folder_reports_progress(backend: ComfyUIBackend, tmp_path: Path) -> None:
    events = Recorder()
    result = backend.run(job(tmp_path, steps_prompt(steps=4), on_event=events))
    assert result.status == "success", result.error
    assert [(p["value"], p["max"], p["node"]) for p in events.of("progress")] == [(i, 4, "1") for i in range(1, 5)]
    assert events.of("progress_state"), "ComfyUI's per-node progress_state messages are forwarded"
    assert [e["node"] for e in events.of("executed")] == ["2"]
    assert events.of("executed")[0]["output"]["images"][0]["subfolder"] == ""
    assert pixel(result.outputs[0].path) == (63, 63, 63)  # 0.25 * 255, truncated as SaveImage does
    assert set(result.per_node_s) == {"1", "2"}


def test_warm_caches_serve_the_next_job(backend: ComfyUIBackend, tmp_path: Path) -> None:
    pid = backend.process.pid
    first = backend.run(job(tmp_path / "a", steps_prompt(steps=2, value=0.75)))
    second = backend.run(job(tmp_path / "b", steps_prompt(steps=2, value=0.75)))
    assert first.status == second.status == "success"
    assert "1" in second.cached and second.executed == ["2"]  # only the output node ran again
    assert [o.relative_name for o in second.outputs] == ["pack_00001_.png"]
    assert backend.process.pid == pid


def test_cancelling_goes_through_interrupt(backend: ComfyUIBackend, tmp_path: Path) -> None:
    pid = backend.process.pid
    events = Recorder()
    cancel_after_progress = lambda: bool(events.of("progress"))  # noqa: E731
    run = job(tmp_path, steps_prompt(steps=200, seconds=0.05, value=0.1), cancel_check=cancel_after_progress)
    started = time.perf_counter()
    result = backend.run(BackendJob(**{**run.__dict__, "on_event": events}))
    FIGURES["cancel: first progress to interrupted (s)"] = time.perf_counter() - started
    assert result.status == "interrupted"
    assert [e["node_id"] for e in events.of("execution_interrupted")] == ["1"]
    assert len(events.of("progress")) < 200
    assert backend.process.pid == pid
    assert backend.run(job(tmp_path / "after", steps_prompt(steps=1))).status == "success"


def test_a_crash_mid_job_restarts_comfyui_and_the_job_completes_once_after(
    backend: ComfyUIBackend, tmp_path: Path
) -> None:
    pid, starts = backend.process.pid, backend.process.starts
    marker = tmp_path / "crashed-once"
    run = job(tmp_path, steps_prompt(value=0.5, crash_marker=str(marker)))
    started = time.perf_counter()
    with pytest.raises(ComfyUIRestarted):
        backend.run(run)
    FIGURES["crash: detection + restart to ready (s)"] = time.perf_counter() - started
    assert marker.exists() and backend.process.alive()
    assert backend.process.pid != pid and backend.process.starts == starts + 1
    again = backend.run(run)  # the released job, delivered again
    assert again.status == "success"
    assert [o.relative_name for o in again.outputs] == ["pack_00001_.png"]


def test_per_job_overhead_over_comfyui_called_directly(backend: ComfyUIBackend, tmp_path: Path) -> None:
    """Figures only (speed targets are not asserted in tests): the same warm workflow through the backend and
    through a bare POST /prompt + websocket client."""
    prompt = steps_prompt(steps=1, value=0.3)
    backend.run(job(tmp_path / "warm", prompt))
    rounds = 10
    through = []
    for index in range(rounds):
        started = time.perf_counter()
        assert backend.run(job(tmp_path / f"b{index}", prompt)).status == "success"
        through.append(time.perf_counter() - started)
    client = backend.process.client
    assert client is not None
    direct = []
    for index in range(rounds):
        body = {"prompt": {**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "x": index}}}}
        started = time.perf_counter()
        with client.websocket("direct") as websocket:
            prompt_id = client.queue_prompt({**body, "client_id": "direct"})["prompt_id"]
            while True:
                message = websocket.recv(timeout=30)
                if isinstance(message, str):
                    data = json.loads(message)
                    if data["type"] == "execution_success" and data["data"]["prompt_id"] == prompt_id:
                        break
            client.history(prompt_id)
        direct.append(time.perf_counter() - started)
    through.sort()
    direct.sort()
    FIGURES["job through the backend, median (ms)"] = through[rounds // 2] * 1000
    FIGURES["same job on ComfyUI directly, median (ms)"] = direct[rounds // 2] * 1000
    FIGURES["added per job, median (ms)"] = (through[rounds // 2] - direct[rounds // 2]) * 1000


def compat(name: str) -> dict[str, Any]:
    document = json.loads((COMPAT / name).read_text())
    return {key: value for key, value in document.items() if isinstance(value, dict)}


@pytest.mark.parametrize("name", ["08_cog_upscale_model.json", "14_comfyui_ws_images_example_SaveImageWebsocket.json"])
def test_the_exported_catalog_accepts_workflows_only_comfyui_can_run(backend: ComfyUIBackend, name: str) -> None:
    exported = Catalog.from_object_info(backend.object_info())
    prompt = compat(name)
    assert validate_prompt(prompt, exported.specs).ok
    refused = validate_prompt(prompt, Catalog.packaged().specs)
    assert refused.error is not None and refused.error["type"] == "invalid_prompt"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda p: p.update({"99": {"class_type": "ImageResize+", "inputs": {}}}), "unknown class"),
        (lambda p: p["4"]["inputs"].update({"ckpt_name": "not-there.safetensors"}), "model not listed"),
        (lambda p: p["3"]["inputs"].pop("seed"), "missing input"),
        (lambda p: p["3"]["inputs"].update({"steps": 0}), "below min"),
    ],
)
def test_the_edge_refuses_as_comfyui_refuses(backend: ComfyUIBackend, change: Any, where: str) -> None:
    prompt = compat("14_comfyui_ws_images_example_SaveImageWebsocket.json")
    change(prompt)
    ours = validate_prompt(prompt, Catalog.from_object_info(backend.object_info()).specs)
    client = backend.process.client
    assert client is not None
    with pytest.raises(ComfyUIHTTPError) as refused:
        client.queue_prompt({"prompt": prompt})
    theirs = refused.value.body
    assert refused.value.status == 400, where
    assert ours.error == theirs["error"], where
    assert ours.node_errors == theirs["node_errors"], where
