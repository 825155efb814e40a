"""ComfyUI's POST /upload/image per tenant: storing, ComfyUI's renaming, refusals that store nothing, and
LoadImage values that name an upload becoming job inputs; GET /view?type=input serves the upload back."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from urllib3 import encode_multipart_formdata

from comfyserve.contracts.jobs import InputRef
from comfyserve.service import comfyui_uploads, keys
from tests.api_stack import Stack, error_body, make_stack, workflow
from tests.apigw import ApiResponse
from tests.images import png


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(png((4, 3), color=(255, 0, 0)))
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's CRC over type and data
    return bytes(data)


RED, BLUE, GREEN = (png((4, 3), color=c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0)))


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


def upload(
    stack: Stack,
    data: bytes = RED,
    name: str = "cat.png",
    tenant: str = "tenant-a",
    prefix: str = "",
    **fields: str,
) -> ApiResponse:
    body, content_type = encode_multipart_formdata({"image": (name, data, "image/png"), **fields})
    return stack.call(
        "POST", f"{prefix}/upload/image", body=body, binary=True, headers={"Content-Type": content_type}, tenant=tenant
    )


def uploads(stack: Stack) -> list[str]:
    return stack.blobs.list("uploads/")


def invalid(type_: str, message: str, details: str) -> dict[str, Any]:
    return error_body(type_, message, details)


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_upload_stores_the_image_in_the_tenants_folder(stack: Stack, prefix: str) -> None:
    response = upload(stack, RED, "cat.png", prefix=prefix, subfolder="pasted")

    assert response.status == 200
    assert response.json() == {"name": "cat.png", "subfolder": "pasted", "type": "input"}
    key = "uploads/tenant-a/pasted/cat.png"
    assert uploads(stack) == [key]
    assert stack.blobs.get(key) == RED
    assert stack.blobs.head(key).content_type == "image/png"  # type: ignore[union-attr]
    view = stack.call("GET", f"{prefix}/view?type=input&filename=cat.png&subfolder=pasted")
    assert (view.status, view.header("Content-Type"), view.body) == (200, "image/png", RED)


def test_name_taken_by_other_content_is_renamed_as_comfyui_does(stack: Stack) -> None:
    names = [upload(stack, data, "cat.png").json()["name"] for data in (RED, BLUE, GREEN)]

    assert names == ["cat.png", "cat (1).png", "cat (2).png"]
    assert [stack.blobs.get(f"uploads/tenant-a/{name}") for name in names] == [RED, BLUE, GREEN]


def test_identical_content_keeps_its_name(stack: Stack) -> None:
    first = upload(stack, RED, "cat.png", subfolder="a")
    again = upload(stack, RED, "cat.png", subfolder="a/")

    assert first.json() == again.json() == {"name": "cat.png", "subfolder": "a", "type": "input"}
    assert uploads(stack) == ["uploads/tenant-a/a/cat.png"]


@pytest.mark.parametrize("flag", ["true", "1"])
def test_overwrite_replaces_the_file(stack: Stack, flag: str) -> None:
    upload(stack, RED, "cat.png")

    response = upload(stack, BLUE, "cat.png", overwrite=flag)

    assert response.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
    assert uploads(stack) == ["uploads/tenant-a/cat.png"]
    assert stack.blobs.get("uploads/tenant-a/cat.png") == BLUE


def test_other_overwrite_values_rename(stack: Stack) -> None:
    upload(stack, RED, "cat.png")

    assert upload(stack, BLUE, "cat.png", overwrite="false").json()["name"] == "cat (1).png"


def test_temp_and_output_types_are_stored_in_the_uploads_and_viewable(stack: Stack) -> None:
    response = upload(stack, RED, "mask.png", type="temp")

    assert response.json() == {"name": "mask.png", "subfolder": "", "type": "temp"}
    assert uploads(stack) == ["uploads/tenant-a/mask.png"]
    assert stack.call("GET", "/view?type=temp&filename=mask.png").body == RED


def test_jpeg_is_stored_with_its_content_type(stack: Stack) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "JPEG")

    assert upload(stack, buffer.getvalue(), "photo.jpg").status == 200
    assert stack.blobs.head("uploads/tenant-a/photo.jpg").content_type == "image/jpeg"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "fields", "message", "details"),
    [
        ("", {}, "Invalid file name", "a file name is 1-128 printable characters"),
        ("x" * 129 + ".png", {}, "Invalid file name", "a file name is 1-128 printable characters"),
        ("..", {}, "Invalid file name", "'..' is not a plain file name (no '/', '\\' or '..')"),
        ("../evil.png", {}, "Invalid file name", "'../evil.png' is not a plain file name (no '/', '\\' or '..')"),
        ("a/evil.png", {}, "Invalid file name", "'a/evil.png' is not a plain file name (no '/', '\\' or '..')"),
        ("cat.png", {"subfolder": "/abs"}, "Invalid subfolder", "subfolder '/abs': absolute path"),
        ("cat.png", {"subfolder": "a/../b"}, "Invalid subfolder", "subfolder 'a/../b': '..' segment"),
        ("cat.png", {"subfolder": "a//b"}, "Invalid subfolder", "subfolder 'a//b': empty segment"),
        ("cat.png", {"subfolder": "a\\b"}, "Invalid subfolder", "subfolder 'a\\\\b': backslash"),
        ("cat.png", {"subfolder": "s" * 101}, "Invalid subfolder", "a subfolder is at most 100 characters"),
        ("cat.png", {"type": "models"}, "Invalid type", "type must be one of input, temp, output, not 'models'"),
    ],
)
def test_bad_names_are_400_and_store_nothing(
    stack: Stack, name: str, fields: dict[str, str], message: str, details: str
) -> None:
    response = upload(stack, RED, name, **fields)

    assert response.status == 400
    assert response.json() == invalid("invalid_upload", message, details)
    assert uploads(stack) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, not an image", RED[:40], b"%!PS-Adobe-3.0 EPSF-3.0\n"],
    ids=["empty", "text", "truncated-png", "eps"],
)
def test_not_an_image_is_400_and_stores_nothing(stack: Stack, data: bytes) -> None:
    response = upload(stack, data, "cat.png")

    assert response.status == 400
    assert response.json() == invalid(
        "invalid_image", "Invalid image", "'cat.png' is not a valid image (BMP, GIF, JPEG, PNG, TIFF, WEBP)"
    )
    assert uploads(stack) == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height", "shown"),
    [
        (4097, 4096, " 4097x4096,"),  # just over COMFYSERVE_MAX_PIXELS (4096 x 4096 by default)
        (8000, 8000, " 8000x8000,"),
        (9500, 9500, " 9500x9500,"),  # Pillow's warning
        (100_000, 100_000, ""),  # Pillow's error, before the size is known
    ],
)
def test_an_image_over_the_pixel_cap_is_400_by_its_header_and_stores_nothing(
    stack: Stack, width: int, height: int, shown: str
) -> None:
    response = upload(stack, png_claiming(width, height), "bomb.png")

    assert response.status == 400
    details = f"'bomb.png' is{shown} over the limit of 16,777,216 pixels"
    assert response.json() == invalid("image_too_large", "Image too large", details)
    assert uploads(stack) == []


def test_the_pixel_cap_follows_the_setting_up_to_the_decoders_limit(tmp_path: Path) -> None:
    small = make_stack(tmp_path / "small", max_pixels=64 * 64)
    large = make_stack(tmp_path / "large", max_pixels=None)

    refused = upload(small, png_claiming(65, 64), "a.png")
    capped = upload(large, png_claiming(8193, 8192), "b.png")

    assert refused.json()["error"]["details"] == "'a.png' is 65x64, over the limit of 4,096 pixels"
    assert capped.json()["error"]["details"] == "'b.png' is 8193x8192, over the limit of 67,108,864 pixels"
    assert upload(small, png((64, 64)), "c.png").status == 200


def test_missing_image_field_is_400(stack: Stack) -> None:
    for fields in ({"subfolder": "a"}, {"image": "not a file"}):
        body, content_type = encode_multipart_formdata(fields)

        response = stack.call("POST", "/upload/image", body=body, binary=True, headers={"Content-Type": content_type})

        assert response.status == 400
        assert response.json() == invalid(
            "invalid_upload", "No image uploaded", "send the file in the form field 'image'"
        )
    assert uploads(stack) == []


@pytest.mark.parametrize(
    ("content_type", "shown"), [("application/json", "application/json"), (None, "no content type")]
)
def test_wrong_content_type_is_415(stack: Stack, content_type: str | None, shown: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = stack.call("POST", "/upload/image", body=b'{"image": "cat.png"}', headers=headers)

    assert response.status == 415
    assert response.json() == invalid(
        "unsupported_media_type", "Unsupported content type", f"send multipart/form-data, not {shown}"
    )
    assert uploads(stack) == []


@pytest.mark.parametrize(
    ("content_type", "details"),
    [
        ("multipart/form-data", "the Content-Type has no boundary"),
        ("multipart/form-data; boundary=other", "the body does not start with its boundary"),
    ],
)
def test_unreadable_multipart_is_400(stack: Stack, content_type: str, details: str) -> None:
    body, _ = encode_multipart_formdata({"image": ("cat.png", RED, "image/png")})

    response = stack.call("POST", "/upload/image", body=body, binary=True, headers={"Content-Type": content_type})

    assert response.status == 400
    assert response.json() == invalid("invalid_multipart", "Invalid multipart body", details)
    assert uploads(stack) == []


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, max_body_bytes=len(RED))

    response = upload(stack, RED)

    assert response.status == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert uploads(stack) == []


def test_too_many_renames_is_409(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(comfyui_uploads, "MAX_RENAMES", 1)
    upload(stack, RED)
    upload(stack, BLUE)

    response = upload(stack, GREEN)

    assert response.status == 409
    assert response.json() == invalid("upload_name_taken", "Too many files with this name", "'cat.png': use overwrite")
    assert uploads(stack) == ["uploads/tenant-a/cat (1).png", "uploads/tenant-a/cat.png"]


def picture_prompt(*names: str) -> dict[str, Any]:
    graph = workflow()
    for index, name in enumerate(names):
        graph[f"p{index}"] = {"class_type": "LoadPicture", "inputs": {"image": name}}
        graph[f"s{index}"] = {"class_type": "Save", "inputs": {"images": [f"p{index}", 0], "filename_prefix": "x"}}
    return graph


def job_inputs(stack: Stack, response: ApiResponse, tenant: str = "tenant-a") -> dict[str, InputRef]:
    assert response.status in (200, 202), response.json()
    body = response.json()
    record = stack.jobs.get(tenant, body.get("prompt_id") or body.get("job_id"))
    assert record is not None
    return record.inputs


def test_prompt_loading_uploads_gets_them_as_inputs(stack: Stack) -> None:
    upload(stack, RED, "cat.png", subfolder="pasted")
    upload(stack, BLUE, "dog.png")
    names = ("pasted/cat.png", "dog.png [input]", "dog.png", "missing.png", "../tenant-b/dog.png")

    response = stack.call("POST", "/prompt", body={"prompt": picture_prompt(*names)})

    assert job_inputs(stack, response) == {
        "pasted/cat.png": InputRef(key="uploads/tenant-a/pasted/cat.png", content_type="image/png"),
        "dog.png [input]": InputRef(key="uploads/tenant-a/dog.png", content_type="image/png"),
        "dog.png": InputRef(key="uploads/tenant-a/dog.png", content_type="image/png"),
    }  # a value that names no upload stays as it is, for the worker to report


def test_job_inputs_win_over_uploads_and_uploads_pass_strict_validation(stack: Stack) -> None:
    upload(stack, RED, "cat.png")
    upload(stack, BLUE, "dog.png")
    explicit = {"base64": base64.b64encode(GREEN).decode()}

    response = stack.call(
        "POST", "/v1/jobs", body={"workflow": picture_prompt("cat.png", "dog.png"), "inputs": {"cat.png": explicit}}
    )

    cat = keys.input_key("tenant-a", response.json()["job_id"], "cat.png")
    assert job_inputs(stack, response) == {
        "cat.png": InputRef(key=cat, content_type="image/png"),
        "dog.png": InputRef(key="uploads/tenant-a/dog.png", content_type="image/png"),
    }
    assert stack.blobs.get(cat) == GREEN


def test_another_tenant_cannot_use_or_view_an_upload(stack: Stack) -> None:
    upload(stack, RED, "cat.png", tenant="tenant-b")

    submitted = stack.call("POST", "/prompt", body={"prompt": picture_prompt("cat.png")})
    view = stack.call("GET", "/view?type=input&filename=cat.png")
    own_view = stack.call("GET", "/view?type=input&filename=cat.png", tenant="tenant-b")

    assert job_inputs(stack, submitted) == {}
    assert view.status == 404
    assert view.json() == invalid("input_not_found", "Input not found", "cat.png")
    assert own_view.body == RED


def test_view_of_uploads_rejects_escaping_names(stack: Stack) -> None:
    response = stack.call("GET", "/view?type=input&filename=cat.png&subfolder=../tenant-b")

    assert response.status == 400
    assert response.json() == invalid("invalid_view", "Invalid filename", "'..' and '/' are not allowed in a filename")


def test_api_edge_loads_pillow_only_for_an_upload() -> None:
    code = "import sys, comfyserve.api.app, comfyserve.api.wiring; print('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "False", result.stderr
