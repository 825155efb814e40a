"""``comfyserve serve --backend comfyui`` on a real ComfyUI, as a user runs it (a subprocess, real HTTP and
websocket on loopback): a ComfyUI client's prompt with progress and an image, cancellation, a ComfyUI crash
mid-job (released, then completed once), and the edge validating against the catalog ComfyUI serves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.sync.client import connect

from tests.comfyui_real.conftest import COMPAT, FIGURES, PACKS
from tests.comfyui_real.prompts import steps_prompt
from tests.integration.stack_helpers import Api

KEY = "alice-key"
COMFYUI_ONLY = {  # ImageQuantize is not a built-in node: the stand-in catalog does not have it
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "4": {"class_type": "ImageQuantize", "inputs": {"image": ["1", 0], "colors": 256, "dither": "none"}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
}
STARTING: dict[str, Any] = {}  # what the API answered while ComfyUI was starting


@pytest.fixture(scope="module")
def served(comfyui_dir: Path, model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("serve-data")
    argv = [sys.executable, "-m", "comfyserve", "serve", "--port", "0", "--data", str(data)]
    argv += ["--models", str(model_root), "--custom-nodes", str(PACKS)]
    argv += ["--backend", "comfyui", "--comfyui-dir", str(comfyui_dir), "--cache-lru", "32"]
    env = {**os.environ, "COMFYSERVE_API_KEYS": f"alice:{KEY}"}
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    url = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        early = re.search(r"starting ComfyUI in each worker… \(meanwhile (http://\S+)/v1/health", line)
        if early:
            STARTING["health"] = requests.get(f"{early.group(1)}/v1/health", timeout=10).json()
            STARTING["prompt"] = requests.post(
                f"{early.group(1)}/prompt", json={"prompt": COMFYUI_ONLY}, headers={"x-api-key": KEY}, timeout=10
            )
        found = re.search(r"serving on (http://\S+)", line)
        if found:
            url = found.group(1)
            break
    assert url is not None, "".join(lines)
    FIGURES["serve --backend comfyui: start to serving (s)"] = time.perf_counter() - started
    try:
        yield Api(url, KEY)
    finally:
        process.terminate()
        process.wait(60)


def test_while_comfyui_starts_a_workflow_is_answered_503_with_retry_after_not_400(served: Api) -> None:
    assert STARTING["health"]["status"] == "starting"
    answer = STARTING["prompt"]
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "5" and answer.json()["error"]["type"] == "starting"
    assert requests.get(f"{served.url}/v1/health", timeout=10).json()["status"] == "ok"  # ComfyUI's catalog now
    commands = [path.read_bytes().split(b"\0") for path in Path("/proc").glob("[0-9]*/cmdline")]
    assert any(b"main.py" in argv and b"--cache-lru" in argv and b"32" in argv for argv in commands)  # ComfyUI's


def test_previews_and_text_reach_history_and_view(served: Api) -> None:
    answer = served.http.post(f"{served.url}/prompt", json={"prompt": COMFYUI_ONLY}, timeout=10)
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    assert served.wait_status(prompt_id, timeout_s=60)["status"] == "succeeded"
    outputs = served.http.get(f"{served.url}/history/{prompt_id}", timeout=10).json()[prompt_id]["outputs"]
    [preview] = outputs["2"]["images"]
    assert preview["type"] == "temp"
    view = served.http.get(f"{served.url}/view", params=preview, timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
    assert isinstance(outputs["3"]["text"][0], str)  # PreviewAny's text


def test_a_comfyui_client_gets_progress_and_its_image(served: Api) -> None:
    client_id = uuid.uuid4().hex
    ws_url = served.url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
    events: list[tuple[str, dict[str, Any]]] = []
    with connect(ws_url, additional_headers={"x-api-key": KEY}, open_timeout=10) as websocket:
        answer = served.http.post(
            f"{served.url}/prompt",
            json={"prompt": steps_prompt(5, 0.05, 0.5, prefix="served"), "client_id": client_id},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        while True:
            message = json.loads(websocket.recv(timeout=120))
            events.append((message["type"], message["data"]))
            if message["type"] == "executing" and message["data"].get("node") is None:
                break
    progress = [(d["value"], d["max"]) for event, d in events if event == "progress"]
    assert progress == [(i, 5) for i in range(1, 6)]
    assert "execution_success" in [event for event, _ in events]
    history = served.http.get(f"{served.url}/history/{prompt_id}", timeout=10).json()[prompt_id]
    image = history["outputs"]["2"]["images"][0]
    view = served.http.get(f"{served.url}/view", params=image, timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")


def test_a_running_job_is_cancelled_through_interrupt(served: Api) -> None:
    job_id = served.submit(steps_prompt(400, 0.05, 0.2, prefix="served"))
    served.wait_status(job_id, ("running",), timeout_s=60)
    time.sleep(1.0)  # let it reach the sampler-like loop
    answer = served.http.post(f"{served.url}/v1/jobs/{job_id}/cancel", timeout=10)
    assert answer.status_code == 202, answer.text
    started = time.perf_counter()
    view = served.wait_status(job_id, timeout_s=60)
    FIGURES["serve: cancel request to cancelled (s)"] = time.perf_counter() - started
    assert view["status"] == "cancelled"


def test_a_comfyui_crash_mid_job_releases_the_job_and_it_completes_once(served: Api, tmp_path: Path) -> None:
    marker = tmp_path / "crash-once"
    job_id = served.submit(steps_prompt(2, 0.0, 0.6, crash_marker=str(marker), prefix="served"))
    view = served.wait_status(job_id, timeout_s=180)
    assert marker.exists()  # the first attempt killed ComfyUI
    assert view["status"] == "succeeded", view  # the released job ran again on the restarted ComfyUI
    assert [o["filename"] for o in view["outputs"]] == ["served_00001_.png"]


def test_the_edge_validates_against_the_catalog_comfyui_serves(served: Api) -> None:
    upscale = json.loads((COMPAT / "08_cog_upscale_model.json").read_text())
    answer = served.http.post(f"{served.url}/v1/validate", json={"workflow": upscale}, timeout=10)
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    refused = served.http.post(
        f"{served.url}/prompt", json={"prompt": {**upscale, "99": {"class_type": "ImageResize+", "inputs": {}}}}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Cannot execute because node ImageResize+ does not exist."
    assert (
        "ImageUpscaleWithModel"
        in requests.get(f"{served.url}/object_info", headers={"x-api-key": KEY}, timeout=30).json()
    )
