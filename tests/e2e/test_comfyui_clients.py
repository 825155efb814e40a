"""ComfyUI's own example clients, unchanged, against the local server (reference §2, §1.10).

The two flows below are written as ComfyUI's ``script_examples/basic_api_example.py`` and
``websockets_api_example.py`` write them (urllib and websocket-client, no API key: the stack serves keyless
requests as an anonymous tenant, the option that exists for such clients), with an image-only prompt; a third
uploads its source image with ``POST /upload/image`` first, as img2img clients do.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from comfyserve.localstack.stack import LocalStack
from comfyserve.service.settings import ServiceSettings
from tests.integration.stack_helpers import IMAGE_PACKS, wait_for

PROMPT_TEXT = """
{
  "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16711680}},
  "5": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
  "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["5", 0]}}
}
"""


@pytest.fixture(scope="module")
def server_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = ServiceSettings(anonymous_tenant="comfyui")
    data_dir = tmp_path_factory.mktemp("comfyui")
    with LocalStack(data_dir, port=0, workers=1, settings=settings, node_packs=IMAGE_PACKS) as stack:
        stack.wait_ready()
        yield stack.url.removeprefix("http://")


# -- basic_api_example.py --------------------------------------------------------------------------------


def test_basic_api_example_queues_a_prompt_that_runs(server_address: str) -> None:
    def queue_prompt(prompt: dict[str, Any]) -> dict[str, Any]:
        p = {"prompt": prompt}
        data = json.dumps(p).encode("utf-8")
        req = urllib.request.Request(f"http://{server_address}/prompt", data=data)
        return json.loads(urllib.request.urlopen(req).read())

    prompt = json.loads(PROMPT_TEXT)
    prompt["3"]["inputs"]["color"] = 255  # the example edits an input before queueing, as it sets the seed
    queued = queue_prompt(prompt)
    assert set(queued) == {"prompt_id", "number", "node_errors"} and queued["node_errors"] == {}

    def history() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{server_address}/history/{queued['prompt_id']}") as response:
            return json.loads(response.read())

    entry = wait_for(history, what="the prompt in the history")[queued["prompt_id"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert list(entry["outputs"]) == ["9"]


# -- websockets_api_example.py ---------------------------------------------------------------------------
# The example's functions, with the server address and client id passed in rather than global.


def queue_prompt(server_address: str, client_id: str, prompt: dict[str, Any]) -> dict[str, Any]:
    p = {"prompt": prompt, "client_id": client_id}
    data = json.dumps(p).encode("utf-8")
    req = urllib.request.Request(f"http://{server_address}/prompt", data=data)
    return json.loads(urllib.request.urlopen(req).read())


def get_image(server_address: str, filename: str, subfolder: str, folder_type: str) -> bytes:
    data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
    url_values = urllib.parse.urlencode(data)
    with urllib.request.urlopen(f"http://{server_address}/view?{url_values}") as response:
        return response.read()


def get_history(server_address: str, prompt_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{server_address}/history/{prompt_id}") as response:
        return json.loads(response.read())


def get_images(
    server_address: str, client_id: str, ws: websocket.WebSocket, prompt: dict[str, Any]
) -> dict[str, list[bytes]]:
    prompt_id = queue_prompt(server_address, client_id, prompt)["prompt_id"]
    output_images = {}
    while True:
        out = ws.recv()
        if isinstance(out, str):
            message = json.loads(out)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break  # Execution is done
        else:
            continue  # previews are binary data

    history = get_history(server_address, prompt_id)[prompt_id]
    for node_id in history["outputs"]:
        node_output = history["outputs"][node_id]
        images_output = []
        if "images" in node_output:
            for image in node_output["images"]:
                image_data = get_image(server_address, image["filename"], image["subfolder"], image["type"])
                images_output.append(image_data)
        output_images[node_id] = images_output
    return output_images


def run_over_websocket(server_address: str, prompt: dict[str, Any]) -> dict[str, list[bytes]]:
    client_id = str(uuid.uuid4())
    ws = websocket.WebSocket()
    ws.settimeout(30)
    ws.connect(f"ws://{server_address}/ws?clientId={client_id}")
    try:
        return get_images(server_address, client_id, ws, prompt)
    finally:
        ws.close()


def test_websockets_api_example_gets_its_images(server_address: str) -> None:
    images = run_over_websocket(server_address, json.loads(PROMPT_TEXT))

    assert list(images) == ["9"] and len(images["9"]) == 1
    image = Image.open(io.BytesIO(images["9"][0]))
    assert image.size == (64, 48) and image.convert("RGB").getpixel((0, 0)) == (0, 255, 255)
    assert json.loads(image.info["prompt"])["9"]["class_type"] == "SaveImage"  # the prompt, as ComfyUI embeds it


# -- an img2img client: upload the source image, then a LoadImage naming it ----------------------------------


def upload_image(server_address: str, data: bytes, name: str, overwrite: bool = False) -> dict[str, Any]:
    """As ComfyUI client scripts upload: multipart with the file in ``image`` (requests builds the body)."""
    files = {"image": (name, data, "image/png")}
    response = requests.post(
        f"http://{server_address}/upload/image", files=files, data={"overwrite": str(overwrite).lower()}, timeout=30
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_uploaded_image_feeds_a_loadimage_prompt(server_address: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(buffer, "PNG")
    source = buffer.getvalue()
    uploaded = upload_image(server_address, source, "source.png", overwrite=True)
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded["name"]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "img2img", "images": ["2", 0]}},
    }

    images = run_over_websocket(server_address, prompt)

    assert uploaded == {"name": "source.png", "subfolder": "", "type": "input"}
    assert list(images) == ["3"] and len(images["3"]) == 1
    image = Image.open(io.BytesIO(images["3"][0]))
    assert image.size == (40, 30) and image.convert("RGB").getpixel((0, 0)) == (0, 255, 255)
    assert get_image(server_address, "source.png", "", "input") == source  # the upload's preview
