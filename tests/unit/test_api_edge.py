"""Bad requests refused by the route table before anything is recorded: bodies that are not JSON (too deep,
not UTF-8), methods a path does not have. Each answer is exact, and nothing was stored, queued or published."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyserve.api.bodies import MAX_JSON_DEPTH, loads_json
from tests.api_stack import Stack, error_body, make_stack, workflow

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
