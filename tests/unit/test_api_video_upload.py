"""Videos at the edge, as ComfyUI clients send them: ``POST /upload/image`` takes a video (the editor uploads Load
Video's files there), ``/object_info`` lists the uploads by content type (Load Video the videos, image inputs the
rest), and a Load Video value naming an upload, or a base64 input, becomes a job input checked as a video (by
its container signature: the edge has no codecs; the worker caps the decoded frames)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from urllib3 import encode_multipart_formdata

from comfyserve.contracts.jobs import InputRef
from comfyserve.engine.catalog import Catalog
from comfyserve.service import keys
from comfyserve.service.inputs import sniff_video_type
from tests.api_stack import Stack, error_body, make_stack, tiny_catalog, workflow
from tests.apigw import ApiResponse
from tests.images import png
from tests.unit.media_fixtures import moving_frames, write_video

VIDEO_ENTRIES = json.loads((Path(__file__).parents[1] / "data" / "comfyui_object_info" / "video.json").read_text())


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    """The validation test pack plus ComfyUI's video classes, read from their catalog entries (no node code)."""
    return make_stack(tmp_path, Catalog.from_object_info({**tiny_catalog().to_object_info(), **VIDEO_ENTRIES}))


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", moving_frames(3, 16, 16), 8).read_bytes()


def upload(stack: Stack, data: bytes, name: str) -> ApiResponse:
    body, content_type = encode_multipart_formdata({"image": (name, data, "application/octet-stream")})
    return stack.call("POST", "/upload/image", body=body, binary=True, headers={"Content-Type": content_type})


def video_prompt(name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": name}},
        "2": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["1", 0], "filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"},
        },
    }


def test_a_video_upload_is_stored_and_served_as_a_video(stack: Stack, mp4: bytes) -> None:
    response = upload(stack, mp4, "clip.mp4")

    assert (response.status, response.json()) == (200, {"name": "clip.mp4", "subfolder": "", "type": "input"})
    assert stack.blobs.head("uploads/tenant-a/clip.mp4").content_type == "video/mp4"  # type: ignore[union-attr]
    view = stack.call("GET", "/view?type=input&filename=clip.mp4")
    assert (view.status, view.header("Content-Type"), view.body) == (200, "video/mp4", mp4)


def test_what_is_neither_image_nor_video_is_still_refused(stack: Stack) -> None:
    response = upload(stack, b"\x00\x00\x00\x18moov not a video", "clip.mp4")

    assert response.status == 400 and response.json()["error"]["type"] == "invalid_image"
    assert stack.blobs.list("uploads/") == []


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x00\x00\x00\x20ftypisom", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  ", "video/quicktime"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "video/x-matroska"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", None),
        (b"\x89PNG\r\n\x1a\n", None),
    ],
)
def test_video_containers_are_known_by_their_signature(head: bytes, kind: str | None) -> None:
    assert sniff_video_type(head + b"\x00" * 32) == kind


def test_object_info_lists_videos_for_load_video_and_the_rest_for_image_inputs(stack: Stack, mp4: bytes) -> None:
    upload(stack, mp4, "clip.mp4")
    upload(stack, png((4, 3), color=(255, 0, 0)), "cat.png")

    info = stack.call("GET", "/object_info").json()

    assert info["LoadVideo"]["input"]["required"]["file"] == [
        "COMBO",
        {"multiselect": False, "options": ["clip.mp4"], "video_upload": True},
    ]
    assert info["LoadPicture"]["input"]["required"]["image"][0] == ["cat.png"]


def test_a_load_video_value_naming_an_upload_becomes_a_video_input(stack: Stack, mp4: bytes) -> None:
    upload(stack, mp4, "clip.mp4")

    response = stack.call("POST", "/prompt", body={"prompt": {**workflow(), **video_prompt("clip.mp4")}})

    assert response.status == 200, response.json()
    record = stack.jobs.get("tenant-a", response.json()["prompt_id"])
    assert record is not None
    assert record.inputs == {"clip.mp4": InputRef(key="uploads/tenant-a/clip.mp4", content_type="video/mp4")}


def test_a_base64_video_input_is_checked_as_a_video(stack: Stack, mp4: bytes) -> None:
    good = {"clip.mp4": {"base64": base64.b64encode(mp4).decode()}}
    bad = {"clip.mp4": {"base64": base64.b64encode(png((4, 3), color=(0, 0, 0))).decode()}}

    accepted = stack.call("POST", "/v1/jobs", body={"workflow": video_prompt("clip.mp4"), "inputs": good})
    refused = stack.call("POST", "/v1/jobs", body={"workflow": video_prompt("clip.mp4"), "inputs": bad})

    assert accepted.status == 202, accepted.json()
    job_id = accepted.json()["job_id"]
    record = stack.jobs.get("tenant-a", job_id)
    assert record is not None
    key = keys.input_key("tenant-a", job_id, "clip.mp4")
    assert record.inputs == {"clip.mp4": InputRef(key=key, content_type="video/mp4")}
    assert refused.status == 400
    assert refused.json() == error_body(
        "invalid_video",
        "Invalid video",
        "'clip.mp4' is not a video (MP4, MOV, WEBM, MKV, AVI)",
        {"input": "clip.mp4"},
    )
