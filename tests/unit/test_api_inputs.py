"""Job inputs through POST /v1/jobs: base64 claim checks, uploaded keys, URLs fetched at submit time behind the
SSRF guard (tests fetch from 127.0.0.1 with allow_private_urls)."""

from __future__ import annotations

import base64
import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest

from comfyserve.contracts.jobs import InputRef
from comfyserve.service import keys
from tests.api_stack import Stack, error_body, make_stack, workflow
from tests.file_server import Answer, FileServer, file_server_fixture  # noqa: F401  (the fixture)
from tests.images import png

PNG = png()


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path, max_inline_input_bytes=1024)


@pytest.fixture
def private_stack(tmp_path: Path) -> Stack:
    """URL inputs may be on 127.0.0.1 (the test's file server); small limits to reach."""
    return make_stack(tmp_path, allow_private_urls=True, max_url_input_bytes=2048, url_fetch_timeout_s=0.5)


def picture_workflow(name: str = "cat.png") -> dict[str, Any]:
    graph = workflow()
    graph["5"] = {"class_type": "LoadPicture", "inputs": {"image": name}}
    graph["8"] = {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}}
    return graph


def submit_inputs(stack: Stack, inputs: dict[str, Any], name: str = "cat.png") -> Any:
    return stack.call("POST", "/v1/jobs", body={"workflow": picture_workflow(name), "inputs": inputs})


def upload(stack: Stack, data: bytes, tenant: str = "tenant-a") -> str:
    ticket = stack.call("POST", "/v1/uploads", body={"filename": "cat.png", "content_type": "image/png"}, tenant=tenant)
    key = str(ticket.json()["key"])
    stack.blobs.put(key, data, "image/png")  # what the presigned PUT does
    return key


def inputs_of(stack: Stack, job_id: str) -> dict[str, InputRef]:
    record = stack.jobs.get("tenant-a", job_id)
    assert record is not None
    return record.inputs


def test_base64_input_is_claim_checked_under_a_deterministic_key(stack: Stack) -> None:
    response = submit_inputs(stack, {"cat.png": {"base64": base64.b64encode(PNG).decode()}})

    assert response.status == 202, response.json()
    job_id = response.json()["job_id"]
    key = f"inputs/tenant-a/{job_id}/{hashlib.sha256(b'cat.png').hexdigest()[:16]}"
    assert inputs_of(stack, job_id) == {"cat.png": InputRef(key=key, content_type="image/png")}
    assert stack.blobs.get(key) == PNG
    assert stack.blobs.head(key).content_type == "image/png"  # type: ignore[union-attr]


def test_data_url_prefix_sets_the_content_type(stack: Stack) -> None:
    """For an input no node loads as an image (images get the type their bytes verify as)."""
    data_url = "data:image/webp;base64," + base64.b64encode(b"abc").decode()
    image = {"base64": base64.b64encode(PNG).decode()}

    response = submit_inputs(stack, {"cat.png": image, "extra": {"base64": data_url}})

    ref = inputs_of(stack, response.json()["job_id"])["extra"]
    assert ref.content_type == "image/webp" and ref.key is not None and stack.blobs.get(ref.key) == b"abc"


def test_a_url_input_is_fetched_at_submit_into_a_blob(private_stack: Stack, file_server: FileServer) -> None:
    key = upload(private_stack, PNG)
    dog = png((3, 2), color=(0, 0, 255))
    file_server.answers["/dog.png"] = Answer(body=dog, headers={"Content-Type": "application/octet-stream"})
    graph = picture_workflow()
    graph["6"] = {"class_type": "LoadPicture", "inputs": {"image": "dog.png"}}
    graph["7"] = {"class_type": "Save", "inputs": {"images": ["6", 0], "filename_prefix": "dog"}}
    inputs = {"cat.png": {"key": key}, "dog.png": {"url": file_server.url("/dog.png")}}

    response = private_stack.call("POST", "/v1/jobs", body={"workflow": graph, "inputs": inputs})

    assert response.status == 202, response.json()
    job_id = response.json()["job_id"]
    dog_key = keys.input_key("tenant-a", job_id, "dog.png")
    assert inputs_of(private_stack, job_id) == {
        "cat.png": InputRef(key=key, content_type="image/png"),
        "dog.png": InputRef(key=dog_key, content_type="image/png"),  # the type its bytes verify as
    }
    assert private_stack.blobs.get(dog_key) == dog
    assert file_server.requested == ["/dog.png"]
    [received] = private_stack.queue.receive()
    assert received.message().job_id == job_id and "127.0.0.1" not in received.body  # keys only, no URL


def test_a_url_to_a_private_address_is_refused_before_connecting(stack: Stack, file_server: FileServer) -> None:
    file_server.answers["/cat.png"] = Answer(body=PNG)

    response = submit_inputs(stack, {"cat.png": {"url": file_server.url("/cat.png")}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_input",
        "Input URL refused",
        "input 'cat.png': 127.0.0.1 resolves to non-public address 127.0.0.1",
        {"input": "cat.png"},
    )
    assert file_server.requested == []
    assert stack.nothing_recorded()


def test_a_redirect_is_not_followed(private_stack: Stack, file_server: FileServer) -> None:
    target = file_server.url("/cat.png")
    file_server.answers["/moved"] = Answer(302, headers={"Location": target})
    file_server.answers["/cat.png"] = Answer(body=PNG)

    response = submit_inputs(private_stack, {"cat.png": {"url": file_server.url("/moved")}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_input",
        "Input URL could not be fetched",
        f"input 'cat.png': HTTP 302 redirects to {target}; redirects are not followed",
        {"input": "cat.png"},
    )
    assert file_server.requested == ["/moved"]
    assert private_stack.nothing_recorded()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (Answer(404), "HTTP 404"),
        (Answer(200, PNG, delay_s=2.0), "timed out"),
        (None, "[Errno 111] Connection refused"),
    ],
)
def test_a_url_that_cannot_be_fetched_is_400(
    private_stack: Stack, file_server: FileServer, answer: Answer | None, reason: str
) -> None:
    if answer is None:
        url = f"http://127.0.0.1:{closed_port()}/cat.png"
    else:
        file_server.answers["/cat.png"] = answer
        url = file_server.url("/cat.png")

    response = submit_inputs(private_stack, {"cat.png": {"url": url}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_input", "Input URL could not be fetched", f"input 'cat.png': {reason}", {"input": "cat.png"}
    )
    assert private_stack.nothing_recorded()


@pytest.mark.parametrize("length", [True, False], ids=["declared", "streamed"])
def test_a_url_input_over_the_limit_is_413(private_stack: Stack, file_server: FileServer, length: bool) -> None:
    file_server.answers["/cat.png"] = Answer(body=PNG + b"\0" * 2048, length=length)

    response = submit_inputs(private_stack, {"cat.png": {"url": file_server.url("/cat.png")}})

    assert response.status == 413
    assert response.json() == error_body(
        "input_too_large",
        "Input too large",
        "input 'cat.png' is over 2048 bytes; upload it with POST /v1/uploads instead",
        {"input": "cat.png", "limit": 2048},
    )
    assert private_stack.nothing_recorded()


def test_a_url_input_that_is_not_an_image_is_400(private_stack: Stack, file_server: FileServer) -> None:
    file_server.answers["/cat.png"] = Answer(body=b"<html>not an image</html>", headers={"Content-Type": "image/png"})

    response = submit_inputs(private_stack, {"cat.png": {"url": file_server.url("/cat.png")}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_image",
        "Invalid image",
        "'cat.png' is not a valid image (BMP, GIF, JPEG, PNG, TIFF, WEBP)",
        {"input": "cat.png"},
    )
    assert private_stack.nothing_recorded()


def test_loadimage_must_name_a_supplied_input(stack: Stack) -> None:
    response = submit_inputs(stack, {"cat.png": {"base64": "AAAA"}}, name="other.png")

    assert response.status == 400
    [error] = response.json()["node_errors"]["5"]["errors"]
    assert (error["type"], error["details"]) == ("value_not_in_list", "image: 'other.png' not in ['cat.png']")
    assert stack.nothing_recorded()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/x.png", "127.0.0.1 resolves to non-public address 127.0.0.1"),
        ("http://10.1.2.3:8080/x.png", "10.1.2.3 resolves to non-public address 10.1.2.3"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 resolves to non-public address 169.254.169.254",
        ),
        ("http://[::1]/x.png", "::1 resolves to non-public address ::1"),
        ("file:///etc/passwd", "scheme must be http or https"),
    ],
)
def test_url_inputs_to_private_addresses_are_refused(stack: Stack, url: str, reason: str) -> None:
    response = submit_inputs(stack, {"cat.png": {"url": url}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_input", "Input URL refused", f"input 'cat.png': {reason}", {"input": "cat.png"}
    )
    assert stack.nothing_recorded()


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("uploads/tenant-a/../tenant-b/x.png", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("uploads\\tenant-a\\x.png", "backslash"),
    ],
)
def test_malformed_keys_are_400(stack: Stack, key: str, reason: str) -> None:
    response = submit_inputs(stack, {"cat.png": {"key": key}})

    assert response.status == 400
    assert response.json() == error_body("invalid_key", "Invalid key", f"input 'cat.png': {reason}")
    assert stack.nothing_recorded()


def test_another_tenants_upload_is_403(stack: Stack) -> None:
    key = upload(stack, PNG, tenant="tenant-b")

    response = submit_inputs(stack, {"cat.png": {"key": key}})

    assert response.status == 403
    assert response.json() == error_body(
        "invalid_key", "Not one of your uploads", "input 'cat.png': keys start with uploads/tenant-a/"
    )
    assert not stack.jobs.list("tenant-a")[0]


def test_missing_upload_is_400(stack: Stack) -> None:
    response = submit_inputs(stack, {"cat.png": {"key": "uploads/tenant-a/nothing/cat.png"}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_input",
        "Input key not found",
        "input 'cat.png': nothing was uploaded to uploads/tenant-a/nothing/cat.png",
        {"input": "cat.png"},
    )


def test_bad_base64_is_400_and_too_large_is_413(stack: Stack) -> None:
    bad = submit_inputs(stack, {"cat.png": {"base64": "not base64!"}})
    big = submit_inputs(stack, {"cat.png": {"base64": base64.b64encode(b"x" * 1025).decode()}})

    assert bad.status == 400
    assert bad.json() == error_body(
        "invalid_input", "Invalid base64 input", "input 'cat.png': not valid base64", {"input": "cat.png"}
    )
    assert big.status == 413
    assert big.json() == error_body(
        "input_too_large",
        "Input too large",
        "input 'cat.png' is over 1024 bytes; upload it with POST /v1/uploads instead",
        {"input": "cat.png", "limit": 1024},
    )
    assert stack.nothing_recorded()


def test_one_bad_input_leaves_no_blob_behind(stack: Stack) -> None:
    graph = picture_workflow()
    graph["6"] = {"class_type": "LoadPicture", "inputs": {"image": "dog.png"}}
    graph["7"] = {"class_type": "Save", "inputs": {"images": ["6", 0], "filename_prefix": "dog"}}
    inputs = {
        "cat.png": {"base64": base64.b64encode(PNG).decode()},
        "dog.png": {"url": "http://10.0.0.1/d.png"},
    }

    response = stack.call("POST", "/v1/jobs", body={"workflow": graph, "inputs": inputs})

    assert response.status == 400
    assert stack.nothing_recorded()


def test_an_input_needs_exactly_one_source(stack: Stack) -> None:
    response = submit_inputs(stack, {"cat.png": {"url": "https://93.184.215.14/a.png", "base64": "AAAA"}})

    assert response.status == 400
    assert response.json()["error"]["details"] == (
        "body.inputs.cat.png: Value error, an input needs exactly one of url, key or base64"
    )
