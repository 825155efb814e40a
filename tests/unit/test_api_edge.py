"""Bad requests refused by the route table before anything is recorded: bodies that are not JSON (too deep,
not UTF-8), methods a path does not have. Each answer is exact, and nothing was stored, queued or published."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from comfyserve.api.bodies import MAX_JSON_DEPTH, loads_json
from comfyserve.contracts.jobs import InputRef, JobError
from comfyserve.service import keys
from tests.api_stack import Stack, error_body, make_stack, run_job, workflow
from tests.file_server import Answer, FileServer, file_server_fixture  # noqa: F401  (the fixture)
from tests.images import png

JSON = {"Content-Type": "application/json"}
ROUTES = ["/v1/jobs", "/v1/validate", "/prompt", "/api/prompt", "/queue", "/interrupt"]


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


@pytest.mark.parametrize("path", ROUTES)
def test_json_nested_100000_levels_is_400(stack: Stack, path: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000

    response = stack.call("POST", path, body=deep, headers=JSON)

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_json", "Request body is not valid JSON", f"nested deeper than {MAX_JSON_DEPTH} levels"
    )
    assert stack.nothing_recorded()


@pytest.mark.parametrize("path", ROUTES)
def test_a_body_that_is_not_utf8_is_400(stack: Stack, path: str) -> None:
    response = stack.call("POST", path, body=b'{"prompt": "\xff\xfe"}', headers=JSON, binary=True)

    assert response.status == 400
    assert response.json() == error_body("invalid_json", "Request body is not valid JSON", "the body is not UTF-8 text")
    assert stack.nothing_recorded()


def test_nesting_within_the_limit_is_accepted(stack: Stack) -> None:
    nested: object = 1
    for _ in range(MAX_JSON_DEPTH - 3):
        nested = [nested]
    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow(), "metadata": {"deep": nested}})

    assert response.status == 202, response.json()


def test_loads_json_depth_boundary() -> None:
    assert loads_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(ValueError, match="nested deeper"):
        loads_json('{"a":' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1))


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/v1/jobs", "GET, POST"),
        ("DELETE", "/v1/jobs/abc", "GET"),
        ("PROPFIND", "/api/queue", "GET, POST"),
        ("PUT", "/prompt", "GET, POST"),
    ],
)
def test_a_method_the_path_does_not_have_is_405(stack: Stack, method: str, path: str, allow: str) -> None:
    response = stack.call(method, path, body={"prompt": workflow()})

    assert response.status == 405
    assert response.header("Allow") == allow
    assert response.json() == error_body(
        "method_not_allowed", "Method not allowed", f"{method} {path}", {"allow": allow.split(", ")}
    )
    assert stack.nothing_recorded()


def test_an_unknown_path_stays_404(stack: Stack) -> None:
    response = stack.call("GET", "/nowhere")

    assert response.status == 404
    assert response.json() == error_body("no_route", "Not found", "GET /nowhere")


# -- workflows refused at the edge ------------------------------------------------------------------------


def save_with_prefix(prefix: str) -> dict[str, object]:
    graph = workflow()
    graph["9"]["inputs"]["filename_prefix"] = prefix
    return graph


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("../escape", "a '..' segment"),
        ("out/../../escape", "a '..' segment"),
        ("/etc/cron.d/x", "an absolute path"),
        ("C:\\Windows\\x", "an absolute path"),
        ("\\\\server\\share", "an absolute path"),
        ("x" * 201, "longer than 200 characters"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/jobs", "/prompt"])
def test_a_filename_prefix_out_of_the_output_folder_is_refused(
    stack: Stack, path: str, prefix: str, problem: str
) -> None:
    body = {"workflow": save_with_prefix(prefix)} if path == "/v1/jobs" else {"prompt": save_with_prefix(prefix)}

    response = stack.call("POST", path, body=body)

    assert response.status == 400
    assert response.json()["error"] == {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": f"Invalid filename_prefix: filename_prefix: {problem}",
        "extra_info": {},
    }
    [error] = response.json()["node_errors"]["9"]["errors"]
    assert error["type"] == "value_not_valid" and error["extra_info"]["received_value"] == prefix[:200]
    assert stack.nothing_recorded()


def test_a_4_mib_value_gives_a_bounded_error(stack: Stack) -> None:
    graph = workflow()
    graph["3"]["inputs"]["sampler_name"] = "x" * (4 * 1024 * 1024)

    response = stack.call("POST", "/prompt", body={"prompt": graph})

    assert response.status == 400 and len(response.body) < 16 * 1024
    assert stack.nothing_recorded()


def picture(value: str) -> dict[str, object]:
    return {
        "5": {"class_type": "LoadPicture", "inputs": {"image": value}},
        "8": {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}},
    }


@pytest.mark.parametrize("value", ["/etc/passwd", "../../secret.png", "never-uploaded.png", "other/../x.png"])
def test_an_image_the_tenant_does_not_have_is_refused(stack: Stack, value: str) -> None:
    response = stack.call("POST", "/prompt", body={"prompt": picture(value)})

    assert response.status == 400
    [error] = response.json()["node_errors"]["5"]["errors"]
    assert error["type"] == "value_not_in_list" and error["details"] == f"image: '{value}' not in []"
    assert stack.nothing_recorded()


def test_an_image_url_becomes_an_input_fetched_at_submit(tmp_path: Path, file_server: FileServer) -> None:
    stack = make_stack(tmp_path, allow_private_urls=True)
    file_server.answers["/cat.png"] = Answer(body=png())
    url = file_server.url("/cat.png")

    response = stack.call("POST", "/prompt", body={"prompt": picture(url)})

    assert response.status == 200, response.json()
    job_id = response.json()["prompt_id"]
    record = stack.jobs.get("tenant-a", job_id)
    key = keys.input_key("tenant-a", job_id, url)
    assert record is not None and record.inputs == {url: InputRef(key=key, content_type="image/png")}
    assert stack.blobs.get(key) == png()


def test_an_image_url_to_a_private_address_is_refused(stack: Stack) -> None:
    url = "http://169.254.169.254/latest/meta-data.png"

    response = stack.call("POST", "/prompt", body={"prompt": picture(url)})

    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_input"
    assert response.json()["error"]["message"] == "Input URL refused"
    assert stack.nothing_recorded()


@pytest.mark.parametrize(
    ("data", "type_", "details"),
    [
        (b"not an image at all", "invalid_image", "'cat.png' is not a valid image (BMP, GIF, JPEG, PNG, TIFF, WEBP)"),
        (png()[:-20], "invalid_image", "'cat.png' is not a valid image (BMP, GIF, JPEG, PNG, TIFF, WEBP)"),
        (png((4097, 4096), "1"), "image_too_large", "'cat.png' is 4097x4096, over the limit of 16,777,216 pixels"),
    ],
)
@pytest.mark.parametrize("how", ["base64", "upload"])
def test_image_inputs_get_the_upload_checks(stack: Stack, data: bytes, type_: str, details: str, how: str) -> None:
    if how == "upload":
        ticket = stack.call("POST", "/v1/uploads", body={"filename": "cat.png", "content_type": "image/png"})
        source = {"key": ticket.json()["key"]}
        stack.blobs.put(source["key"], data, "image/png")  # what the presigned PUT does
    else:
        source = {"base64": base64.b64encode(data).decode()}

    response = stack.call("POST", "/v1/jobs", body={"workflow": picture("cat.png"), "inputs": {"cat.png": source}})

    assert response.status == 400
    assert response.json() == error_body(
        type_, "Invalid image" if type_ == "invalid_image" else "Image too large", details, {"input": "cat.png"}
    )
    assert not stack.jobs.list("tenant-a")[0] and stack.queue.approximate_depth().total == 0
    assert [key for key in stack.blobs.list() if not key.startswith("uploads/")] == []


def test_an_image_url_over_the_pixel_cap_is_refused_before_anything_is_stored(
    tmp_path: Path, file_server: FileServer
) -> None:
    stack = make_stack(tmp_path, allow_private_urls=True, max_pixels=512 * 512)
    file_server.answers["/big.png"] = Answer(body=png((513, 512)))
    url = file_server.url("/big.png")

    response = stack.call("POST", "/prompt", body={"prompt": picture(url)})

    assert response.status == 400
    assert response.json() == error_body(
        "image_too_large", "Image too large", f"'{url}' is 513x512, over the limit of 262,144 pixels", {"input": url}
    )
    assert stack.nothing_recorded()


def test_failed_jobs_show_no_host_paths(stack: Stack) -> None:
    job_id = stack.call("POST", "/prompt", body={"prompt": workflow()}).json()["prompt_id"]
    message = "cannot open '/var/lib/comfyserve/models/checkpoints/v1-5.safetensors': " + "x" * 5000
    run_job(stack, job_id, error=JobError(type="node_error", message=message, node_id="4", node_type="Loader"))
    shown = ("cannot open 'v1-5.safetensors': " + "x" * 5000)[:1024] + "…"

    v1 = stack.call("GET", f"/v1/jobs/{job_id}").json()["error"]["message"]
    history = stack.call("GET", f"/history/{job_id}").json()[job_id]["status"]["messages"][-1][1]
    v2 = stack.call("GET", f"/api/v2/jobs/{job_id}").json()["error"]["message"]

    assert v1 == history["exception_message"] == v2 == shown


def prefixed(prefix: str) -> dict[str, Any]:
    graph = workflow()
    graph["9"]["inputs"]["filename_prefix"] = prefix
    return graph


@pytest.mark.parametrize(("prefix", "code"), [("a\x00b", "0000"), ("out\nput", "000A"), ("x\x7f", "007F")])
@pytest.mark.parametrize("route", ["/v1/jobs", "/prompt"])
def test_a_control_character_in_filename_prefix_is_refused_naming_the_input(
    stack: Stack, route: str, prefix: str, code: str
) -> None:
    body = {"workflow": prefixed(prefix)} if route == "/v1/jobs" else {"prompt": prefixed(prefix)}

    response = stack.call("POST", route, body=body)

    assert response.status == 400
    problem = f"filename_prefix: a control character (U+{code}); no output file may be named with one"
    assert response.json() == {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": f"Invalid filename_prefix: {problem}",
            "extra_info": {},
        },
        "node_errors": {
            "9": {
                "errors": [
                    {
                        "type": "value_not_valid",
                        "message": "Invalid filename_prefix",
                        "details": problem,
                        "extra_info": {"input_name": "filename_prefix", "received_value": prefix},
                    }
                ],
                "dependent_outputs": ["9"],
                "class_type": "Save",
            }
        },
    }
    assert stack.nothing_recorded()


SURROGATE_BODIES = {
    "a prefix": ("/prompt", {"prompt": prefixed("\ud800")}),
    "a metadata value": ("/v1/jobs", {"workflow": workflow(), "metadata": {"note": "x\udfffy"}}),
    "a metadata key": ("/v1/jobs", {"workflow": workflow(), "metadata": {"\ud800": 1}}),
    "an input name": ("/v1/jobs", {"workflow": workflow(), "inputs": {"\udc00": {"base64": "iVBORw0KGgo="}}}),
    "a widget value": ("/v1/validate", {"workflow": workflow(sampler_name="\ud83d")}),
}


@pytest.mark.parametrize("case", sorted(SURROGATE_BODIES))
def test_a_lone_surrogate_anywhere_in_a_body_is_a_400_never_a_500(stack: Stack, case: str) -> None:
    route, body = SURROGATE_BODIES[case]

    response = stack.call("POST", route, body=body)  # json.dumps writes the surrogate as a \\uXXXX escape

    assert response.status == 400
    error = response.json()["error"]
    assert (error["type"], error["message"]) == ("invalid_json", "Request body is not valid JSON")
    assert error["details"].startswith("a lone UTF-16 surrogate in the string ")
    assert stack.nothing_recorded()


def test_a_lone_surrogate_in_a_v2_job_is_a_400_in_the_v2_shape(stack: Stack) -> None:
    response = stack.call("POST", "/v2/jobs", body={"workflow": prefixed("\ud800")})

    assert response.status == 400
    assert response.json() == {
        "error": {
            "code": "invalid_request",
            "message": 'Request body is not valid JSON: a lone UTF-16 surrogate in the string "\\ud800"',
            "details": {"type": "invalid_json"},
        }
    }
    assert stack.nothing_recorded()


def test_a_surrogate_pair_is_text_and_accepted(stack: Stack) -> None:
    response = stack.call("POST", "/v1/jobs", body={"workflow": prefixed("emoji-\U0001f600")})

    assert response.status == 202
