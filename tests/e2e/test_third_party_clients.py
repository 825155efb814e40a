"""Third-party ComfyUI clients from PyPI, unchanged, against the local server: comfy-toolkit (no key: the
anonymous tenant; it checks /system_stats before it submits) and comfy-api-simplified (HTTP Basic with the
API key as the password, on HTTP and on the websocket). Both are pinned in the dev dependencies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from comfyserve.localstack.stack import LocalStack
from comfyserve.service.settings import ServiceSettings
from tests.integration.stack_helpers import IMAGE_ONLY, IMAGE_PACKS

KEY = "client-key"


@pytest.fixture(scope="module")
def toolkit() -> Any:
    import comfy_toolkit

    return comfy_toolkit


@pytest.fixture(scope="module")
def simplified() -> Any:
    import comfy_api_simplified

    return comfy_api_simplified


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = ServiceSettings(anonymous_tenant="local")
    with LocalStack(
        tmp_path_factory.mktemp("clients"),
        port=0,
        workers=1,
        api_keys={"alice": KEY},
        settings=settings,
        node_packs=IMAGE_PACKS,
    ) as stack:
        stack.wait_ready()
        yield stack.url


def titled_workflow() -> dict[str, Any]:
    """examples/image_only.json with the node titles the UI would export (clients find nodes by title)."""
    workflow: dict[str, Any] = json.loads(IMAGE_ONLY.read_text())
    for node_id, node in workflow.items():
        node["_meta"] = {"title": f"{node['class_type']} {node_id}"}
    return workflow


def test_comfy_toolkit_checks_health_then_submits_and_waits(toolkit: Any, url: str) -> None:
    client = toolkit.ComfyClient(url)

    stats = client.system_stats()
    prompt_id = client.submit(titled_workflow())
    result = client.wait(prompt_id, expect="images", max_wait=60, poll_interval=0.2)

    assert "system" in stats and stats["devices"]
    assert sorted(image["filename"] for image in result["images"]) == ["mask_00001_.png", "outpaint_00001_.png"]


def test_comfy_api_simplified_with_basic_auth(simplified: Any, url: str) -> None:
    api = simplified.ComfyApiWrapper(url, user="alice", password=KEY)

    images = api.queue_and_wait_images(titled_workflow(), "SaveImage 8")
    info = api.get_object_info("EmptyImage")

    assert list(images) == ["mask_00001_.png"] and images["mask_00001_.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert list(info["EmptyImage"]["input"]["required"]) == ["width", "height", "batch_size", "color"]
    assert "system" in api.get_system_stats()
    with pytest.raises(simplified.exceptions.ComfyApiError):  # the Basic password is read: a wrong one is a 403
        simplified.ComfyApiWrapper(url, user="alice", password="wrong").queue_prompt(titled_workflow())
