"""Pieces of the local stack on their own: the API Gateway event shape (checked against a real Powertools
resolver), the websocket feed writer, the serve command's key file and the submit command's progress text."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import time
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

from comfyserve.commands.serve import local_key
from comfyserve.commands.submit import describe
from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus
from comfyserve.localstack.apigw import LambdaContextStub, build_event, parse_response
from comfyserve.localstack.feed import EventFeed
from comfyserve.localstack.framing import BodyError, DrainBudget, read_body
from comfyserve.localstack.prompt_messages import feed_messages

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def echo_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver()

    @app.post("/v1/echo/<name>")
    def echo(name: str) -> dict[str, Any]:
        event = app.current_event
        return {
            "name": name,
            "tags": event.multi_value_query_string_parameters.get("tag"),
            "key": event.headers.get("X-Api-Key"),
            "body": base64.b64encode(event.decoded_body.encode("latin-1")).decode()
            if event.is_base64_encoded
            else event.body,
            "binary": event.is_base64_encoded,
            "request_id": event.request_context.request_id,
        }

    return app


def test_a_json_request_becomes_a_rest_proxy_event_the_resolver_routes() -> None:
    event = build_event(
        "POST",
        "/v1/echo/alpha",
        "tag=a&tag=b",
        [("x-api-key", "k1"), ("Content-Type", "application/json")],
        b'{"x": 1}',
        "127.0.0.1",
    )
    assert (event["resource"], event["isBase64Encoded"], event["body"]) == ("/{proxy+}", False, '{"x": 1}')
    assert event["queryStringParameters"] == {"tag": "b"}
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"]}
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"

    response = parse_response(echo_app().resolve(event, LambdaContextStub()))
    assert response.status == 200
    body = json.loads(response.body)
    assert body == {
        "name": "alpha",
        "tags": ["a", "b"],
        "key": "k1",
        "body": '{"x": 1}',
        "binary": False,
        "request_id": event["requestContext"]["requestId"],
    }


def test_a_binary_body_travels_base64_encoded() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    event = build_event("POST", "/v1/echo/bin", "", [("Content-Type", "image/png")], png, "::1")
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == png
    assert event["queryStringParameters"] is None


def test_a_base64_response_body_is_decoded_and_multi_value_headers_kept() -> None:
    response = parse_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "image/png", "Set-Cookie": "ignored"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        }
    )
    assert response.status == 201 and response.body == b"\x00\x01"
    assert sorted(response.headers) == [("Content-Type", "image/png"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_feed_messages_rename_outputs_and_close_a_prompt_that_failed_before_running(tmp_path: Path) -> None:
    feed = EventFeed(tmp_path / "feed.sqlite")
    meta = {"comfyui": {"client_id": "c1"}}
    record = JobRecord(job_id="job1", tenant="acme", workflow=WORKFLOW, metadata=meta)
    assert feed_messages(feed)(JobRecord(job_id="job2", tenant="acme", workflow=WORKFLOW)) is None  # no client
    messages = feed_messages(feed)(record)
    assert messages is not None

    messages("executed", {"node": "9", "output": {"images": [{"filename": "a.png", "subfolder": "x", "type": "temp"}]}})
    failed = record.model_copy(update={"status": JobStatus.FAILED, "error": JobError(type="input_error", message="m")})
    messages.finish(failed)

    rows = feed.after(0)
    assert [(r.tenant, r.client_id, r.prompt_id, r.type) for r in rows] == [
        ("acme", "c1", "job1", "executed"),
        ("acme", "c1", "job1", "execution_error"),
        ("acme", "c1", "job1", "status"),
        ("acme", "c1", "job1", "executing"),
    ]
    assert rows[0].data["output"] == {"images": [{"filename": "a.png", "subfolder": "job1/x", "type": "temp"}]}
    assert (rows[1].data["exception_type"], rows[1].data["exception_message"]) == ("input_error", "m")
    assert rows[3].data == {"node": None, "prompt_id": "job1"}
    assert feed.after(rows[-1].seq) == []


def test_serve_creates_one_private_key_file_and_reuses_it(tmp_path: Path) -> None:
    path, key = local_key(tmp_path / "data")
    assert path.read_text() == f"local:{key}\n" and len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_key(tmp_path / "data") == (path, key)


def test_submit_describes_progress_the_way_it_prints_it() -> None:
    running = {"status": "running", "progress": {"node": "3", "step": 4, "max": 20, "nodes_done": 2, "nodes_total": 7}}
    assert describe(running) == "running 2/7 nodes, node 3 step 4/20"
    assert describe({"status": "queued", "progress": None}) == "queued"
    assert describe({"status": "running", "progress": {"nodes_done": 0, "nodes_total": 0}}) == "running"


def test_refused_bodies_are_read_no_faster_than_the_drain_budget_all_readers_together() -> None:
    """Two bodies of 256 KiB dropped at the same time through one budget of 1 MiB/s: 0.5 s at least, and each
    reader still gets its body's verdict (the one over the limit its 413, the unauthorised one nothing kept)."""
    part = b"x" * (64 * 1024)

    def body(parts: int) -> Any:
        messages = [{"type": "http.request", "body": part, "more_body": i < parts - 1} for i in range(parts)]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return receive

    async def both() -> list[Any]:
        budget = DrainBudget(1024 * 1024)
        unauthorised = read_body(body(4), 10 * 1024 * 1024, 5.0, budget, keep=False)
        over_limit = read_body(body(4), 1024, 5.0, budget)
        return await asyncio.gather(unauthorised, over_limit, return_exceptions=True)

    started = time.monotonic()
    dropped, refused = asyncio.run(both())
    elapsed = time.monotonic() - started

    assert dropped == b""
    assert isinstance(refused, BodyError) and (refused.status, refused.type) == (413, "payload_too_large")
    assert elapsed >= 0.45  # 8 parts of 64 KiB dropped, 512 KiB at 1 MiB/s
