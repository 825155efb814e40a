"""``comfyserve submit`` against a scripted loopback API: a refused workflow is listed as ``validate`` lists it,
``--endpoint`` without a scheme means http://, and ``--wait`` prints each state once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from comfyserve.cli import main
from comfyserve.commands.api_client import base_url
from comfyserve.commands.submit import seconds
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import validate_prompt
from comfyserve.service.errors import Invalid

ROOT = Path(__file__).resolve().parents[2]
IMAGE_ONLY = ROOT / "examples" / "image_only.json"

VIEWS = [
    {"status": "queued"},
    {"status": "queued"},
    {"status": "running", "progress": {"nodes_total": 8, "nodes_done": 2, "node": "3"}},
    {
        "status": "succeeded",
        "timings": {"execution_s": 0.5, "queued_s": 0.1},
        "outputs": [{"filename": "demo/a.png", "size": 3}],
    },
]


class Api(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.refuse: dict[str, Any] | None = None
        self.refuse_status = 400
        self.keys: list[str | None] = []
        self.views = list(VIEWS)
        self.posted: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    server: Api

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        document = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.keys.append(self.headers.get("x-api-key"))
        if self.server.refuse is not None:
            self._answer(self.server.refuse_status, self.server.refuse)
            return
        self.server.posted.append(document)
        self._answer(202, {"job_id": "j1", "status": "queued"})

    def do_GET(self) -> None:
        views = self.server.views
        self._answer(200, views.pop(0) if len(views) > 1 else views[0])


@pytest.fixture
def api() -> Iterator[Api]:
    server = Api()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def submit(
    api: Api,
    *extra: str,
    endpoint: str | None = None,
    workflow: Path = IMAGE_ONLY,
    key: tuple[str, ...] = ("--api-key", "k"),
) -> int:
    host, port = api.server_address[:2]
    return main(["submit", str(workflow), "--endpoint", endpoint or f"{host!s}:{port}", *key, *extra])


def test_refused_workflow_lists_node_errors_as_validate_does(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = json.loads(IMAGE_ONLY.read_text())
    prompt["3"]["inputs"]["blur_radius"] = 99
    del prompt["2"]["inputs"]["left"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(prompt))
    api.refuse = Invalid.from_validation(validate_prompt(prompt, Catalog.packaged().specs)).body()  # the server's body
    assert submit(api, workflow=broken) == 1
    refused = capsys.readouterr().err
    assert main(["validate", str(broken)]) == 1
    assert refused == capsys.readouterr().out
    assert refused == (
        "invalid: Prompt outputs failed validation\n"
        "  node 2 (ImagePadForOutpaint): required_input_missing: Required input is missing: left\n"
        "  node 3 (ImageBlur): value_bigger_than_max: Value 99 bigger than max of 31: blur_radius\n"
    )
    assert api.posted == []


def test_refused_missing_model_says_where_models_come_from(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = ROOT / "examples" / "sd15_txt2img.json"
    result = validate_prompt(json.loads(workflow.read_text()), Catalog.packaged().specs, inventory=ModelInventory())
    api.refuse = Invalid.from_validation(result).body()
    assert submit(api, workflow=workflow) == 1
    assert capsys.readouterr().err.endswith(
        "not in []\nmissing models: checkpoints/v1-5-pruned-emaonly.safetensors: the server does not hold them"
        " (a local server takes them from: comfyserve serve --models DIR)\n"
    )


def test_endpoint_without_scheme_means_http(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(api) == 0
    assert json.loads(capsys.readouterr().out) == {"job_id": "j1", "status": "queued"}
    assert list(api.posted[0]["workflow"]) == ["1", "2", "3", "4", "5", "6", "7", "8"]


def test_endpoint_with_another_scheme_is_one_line(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(api, endpoint="ftp://127.0.0.1:1") == 2
    assert capsys.readouterr().err == (
        "comfyserve submit: endpoint 'ftp://127.0.0.1:1' is not an http:// or https:// URL\n"
    )
    assert api.posted == []


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("127.0.0.1:8188", "http://127.0.0.1:8188"),
        ("localhost:8188/", "http://localhost:8188"),
        ("https://api.example.com/prod/", "https://api.example.com/prod"),
        ("http://127.0.0.1:8188", "http://127.0.0.1:8188"),
    ],
)
def test_base_url(endpoint: str, url: str) -> None:
    assert base_url(endpoint) == url


def test_base_url_refuses_other_schemes() -> None:
    with pytest.raises(ComfyServeError) as refused:
        base_url("file:///etc")
    assert str(refused.value) == "endpoint 'file:///etc' is not an http:// or https:// URL"


def test_wait_prints_queued_once(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit(api, "--wait") == 0
    assert capsys.readouterr().out == (
        "job j1 queued\nrunning 2/8 nodes, node 3\nsucceeded in 0.5 s (queued 0.1 s)\noutput demo/a.png (3 bytes)\n"
    )


def test_a_refusal_without_node_errors_exits_1_too(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.refuse = Invalid("Invalid prompt", type_="invalid_prompt", details="a workflow must be a JSON object").body()

    assert submit(api) == 1
    assert capsys.readouterr().err == ("HTTP 400 invalid_prompt: Invalid prompt (a workflow must be a JSON object)\n")


def test_a_server_error_is_not_a_refusal(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    api.refuse, api.refuse_status = {"error": {"type": "service_unavailable", "message": "down"}}, 503

    assert submit(api) == 2
    assert capsys.readouterr().err == "comfyserve submit: HTTP 503 service_unavailable: down\n"


def test_without_a_key_the_request_goes_without_one(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COMFYSERVE_API_KEY", raising=False)

    assert submit(api, key=()) == 0  # a server with --anonymous-tenant takes it
    assert api.keys == [None]
    api.refuse, api.refuse_status = {"error": {"type": "unauthorized", "message": "Missing API key"}}, 401
    assert submit(api, key=()) == 2
    assert capsys.readouterr().err.endswith(
        "comfyserve submit: the server wants an API key: give --api-key or set COMFYSERVE_API_KEY\n"
    )


@pytest.mark.parametrize(
    ("value", "shown"), [(196.440139, "196.4 s"), (1.04, "1.0 s"), (0.0312, "0.031 s"), (None, "? s"), (0, "0 s")]
)
def test_durations_are_printed_for_people(value: float | None, shown: str) -> None:
    assert seconds(value) == shown
