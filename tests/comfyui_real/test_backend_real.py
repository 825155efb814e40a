"""The ComfyUI backend against a real ComfyUI on the CPU: core, extras and custom-pack workflows, progress,
cancellation through /interrupt, a crash mid-job, warm caches, and the exported catalog at the edge."""

from __future__ import annotations

import json
import os
import signal
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
    assert second.cached == ["1", "2"] and second.executed == []  # ComfyUI served the output node from its cache
    assert [o.relative_name for o in second.outputs] == ["pack_00001_.png"]  # the first run's file, still there
    assert second.outputs[0].path.read_bytes() == first.outputs[0].path.read_bytes()
    assert backend.process.pid == pid


def test_the_png_carries_the_prompt_as_submitted_and_a_retry_writes_the_same_bytes(
    backend: ComfyUIBackend, tmp_path: Path
) -> None:
    prompt = steps_prompt(steps=2, value=0.45, prefix="retry")
    first = backend.run(job(tmp_path / "a", prompt, extra_pnginfo={"workflow": {"nodes": []}}))
    with Image.open(first.outputs[0].path) as image:
        assert json.loads(image.info["prompt"]) == prompt  # no rewritten prefix, no added input
        assert json.loads(image.info["workflow"]) == {"nodes": []}
    backend.process.kill()  # the retry of a released job runs on a restarted ComfyUI
    backend.start()
    again = backend.run(job(tmp_path / "b", prompt, extra_pnginfo={"workflow": {"nodes": []}}))
    assert again.executed == ["1", "2"]
    assert [o.relative_name for o in again.outputs] == [o.relative_name for o in first.outputs]
    assert again.outputs[0].path.read_bytes() == first.outputs[0].path.read_bytes()


def test_previews_and_text_outputs_are_collected_and_do_not_pile_up(backend: ComfyUIBackend, tmp_path: Path) -> None:
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0x204060}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    temp = backend.process.folders.temp
    for index in range(3):
        prompt["1"]["inputs"]["color"] = index  # a new preview every time
        result = backend.run(job(tmp_path / str(index), prompt))
        assert result.status == "success", result.error
        [preview] = result.outputs
        assert (preview.node_id, preview.type) == ("2", "temp") and preview.path.read_bytes().startswith(b"\x89PNG")
        assert list(result.ui) == ["3"] and isinstance(result.ui["3"]["text"][0], str)
    assert [p.name for p in temp.rglob("*") if p.is_file()] == [preview.relative_name]  # the last job's only


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


def freeze_at_first_progress(backend: ComfyUIBackend, frozen: list[float]) -> Any:
    def on_event(event: str, data: dict[str, Any]) -> None:
        if event == "progress" and not frozen and backend.process.pid is not None:
            os.kill(backend.process.pid, signal.SIGSTOP)  # ComfyUI answers nothing from here on
            frozen.append(time.perf_counter())

    return on_event


@pytest.mark.parametrize("deadline", [True, False], ids=["at a deadline", "without one"])
def test_a_frozen_comfyui_is_caught_within_the_documented_time(
    backend: ComfyUIBackend, tmp_path: Path, deadline: bool
) -> None:
    """At a job's deadline /interrupt waits at most the grace period (20 s here); without one, the websocket's
    keep-alive ping (every 5 s, 5 s to answer, 5 s to close) notices within 15 s."""
    frozen: list[float] = []
    run = job(tmp_path, steps_prompt(steps=400, seconds=0.05), cancel_check=lambda: deadline and bool(frozen))
    with pytest.raises(ComfyUIRestarted, match="/interrupt" if deadline else "websocket ping"):
        backend.run(BackendJob(**{**run.__dict__, "on_event": freeze_at_first_progress(backend, frozen)}))
    caught = time.perf_counter() - frozen[0] - backend.process.last_start_s
    FIGURES[f"frozen ComfyUI caught ({'at a deadline' if deadline else 'no deadline'}, s)"] = caught
    assert caught < (backend.config.interrupt_grace_s + 1 if deadline else 3 * backend.config.ping_s + 1)
    assert backend.run(job(tmp_path / "after", steps_prompt(steps=1))).status == "success"


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


@pytest.mark.parametrize("name", ["14_comfyui_ws_images_example_SaveImageWebsocket.json"])
def test_the_exported_catalog_accepts_workflows_only_comfyui_can_run(backend: ComfyUIBackend, name: str) -> None:
    exported = Catalog.from_object_info(backend.object_info())
    prompt = compat(name)
    assert validate_prompt(prompt, exported.specs).ok
    refused = validate_prompt(prompt, Catalog.packaged().specs)
    assert refused.error is not None and refused.error["type"] == "invalid_prompt"


def errors_upstream_and_down(prompt: dict[str, Any]) -> None:
    prompt["4"]["inputs"]["ckpt_name"] = "not-there.safetensors"
    prompt["3"]["inputs"]["steps"] = 0


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda p: p.update({"99": {"class_type": "ImageResize+", "inputs": {}}}), "unknown class"),
        (lambda p: p["4"]["inputs"].update({"ckpt_name": "not-there.safetensors"}), "model not listed"),
        (lambda p: p["3"]["inputs"].pop("seed"), "missing input"),
        (lambda p: p["3"]["inputs"].update({"steps": 0}), "below min"),
        (errors_upstream_and_down, "two nodes: ComfyUI's order"),
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
    assert list(ours.node_errors.items()) == list(theirs["node_errors"].items()), where  # in ComfyUI's order


def test_the_catalog_is_comfyuis_object_info_as_it_is(backend: ComfyUIBackend) -> None:
    client = backend.process.client
    assert client is not None
    theirs = client.object_info()
    # What the backend exported at start, served as the edge serves it: the same classes in the same order. The
    # entries are compared on a document fetched now, since ComfyUI's folder listings change as it runs (its
    # first /object_info creates input/3d, which LoadImageSetFromFolderNode then lists).
    assert list(Catalog.from_object_info(backend.object_info()).to_object_info()) == list(theirs)
    ours = Catalog.from_object_info(theirs).to_object_info()
    assert ours == theirs and list(ours) == list(theirs)
    assert any(info["display_name"] is None for info in ours.values())
    for key in ("deprecated", "experimental", "api_node", "output_tooltips"):
        assert any(key in info for info in ours.values()), key
