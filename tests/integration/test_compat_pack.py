"""A node pack written for ComfyUI (tests/compat_pack: it imports comfy.*, comfy_execution, comfy_api,
folder_paths and server) loaded from ``custom_nodes`` by a live local stack (one worker), driven as a ComfyUI
client drives ComfyUI: POST /prompt (its own VALIDATE_INPUTS answered with 400 there), the websocket stream
(progress, progress_state, the pack's own message, executed) and the file it saved, through GET /view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket

from comfyserve.localstack.stack import LocalStack
from tests.compat_pack import CUSTOM_NODES
from tests.integration.stack_helpers import IMAGE_PACKS

KEY = "compat-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("compat"),
        port=0,
        workers=1,
        api_keys={"alice": KEY},
        custom_nodes=[CUSTOM_NODES],
        node_packs=(*IMAGE_PACKS, "comfyserve.nodes.batch"),
    ) as local:
        local.wait_ready()
        yield local


def _prompt(checked: Any = 7, factor: float = 2.0, save: bool = True) -> dict[str, Any]:
    prompt = {
        "solid": {"class_type": "PackSolid", "inputs": {"value": 0.5, "size": 4}},
        "down": {"class_type": "PackCountdown", "inputs": {"count": 2, "image": ["solid", 0]}},
        "scale": {"class_type": "PackScale", "inputs": {"image": ["down", 0], "factor": factor, "mode": "multiply"}},
        "check": {"class_type": "PackCheckedFloat", "inputs": {"value": checked}},
        "report": {"class_type": "PackReport", "inputs": {"images": ["scale", 0], "number": ["check", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["scale", 0], "filename_prefix": "pack"}},
    }
    if not save:  # with a valid output left, ComfyUI accepts the prompt (200) and runs only that output
        del prompt["save"]
    return prompt


def _post(stack: LocalStack, prompt: dict[str, Any], client_id: str) -> requests.Response:
    return requests.post(
        f"{stack.url}/prompt", json={"prompt": prompt, "client_id": client_id}, headers={"x-api-key": KEY}, timeout=30
    )


def test_the_packs_own_validation_answers_400_at_submit(stack: LocalStack) -> None:
    refused = _post(stack, _prompt(checked=-1, save=False), "c-refused")
    assert refused.status_code == 400, refused.text
    body = refused.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["check"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "value - negative values are not allowed",
            "extra_info": {},
        }
    ]
    v3 = _post(stack, _prompt(factor=3.0, save=False), "c-refused")
    assert v3.status_code == 400 and v3.json()["node_errors"]["scale"]["errors"][0]["details"].endswith("unlucky")


def test_the_pack_runs_over_http_and_the_websocket(stack: LocalStack) -> None:
    ws = websocket.WebSocket()
    ws.settimeout(60)
    ws.connect(f"{stack.url.replace('http://', 'ws://')}/ws?clientId=c-run", header=[f"x-api-key: {KEY}"])
    response = _post(stack, _prompt(), "c-run")
    assert response.status_code == 200, response.text
    prompt_id = response.json()["prompt_id"]
    messages = []
    while True:
        message = json.loads(ws.recv())
        messages.append(message)
        if message["type"] == "executing" and message["data"]["node"] is None:
            break
    ws.close()
    types = [m["type"] for m in messages]
    assert "execution_error" not in types and "execution_success" in types
    assert {"type": "pack.hello", "data": {"node": "report", "pixels": 8 * 8 * 3}} in messages
    finished = {n["node_id"] for m in messages if m["type"] == "progress_state" for n in m["data"]["nodes"].values()}
    assert {"solid", "down", "scale", "report", "save"} <= finished
    executed = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"}
    assert executed["report"]["text"] == ["8x8 7"] and executed["scale"] == {"node": ["scale"]}
    (image,) = executed["save"]["images"]
    view = requests.get(f"{stack.url}/view", params=image, headers={"x-api-key": KEY}, timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
    assert prompt_id
