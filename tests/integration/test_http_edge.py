"""The local server's edge over real sockets: what it refuses before the route table (bodies over the limit,
malformed or chunked bodies, unknown methods, slow clients, more clients than slots), each a JSON answer the
client can read, nothing recorded, and the server healthy after."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import requests

from comfyserve.contracts.jobs import JobStatus, Progress
from comfyserve.localstack import edge
from comfyserve.localstack.edge import MAX_API_BODY, EdgeLimits, Mount
from comfyserve.localstack.server import ListenError, LocalServer
from comfyserve.localstack.ws_hub import WebsocketHub
from tests.api_stack import KEYS, Stack, make_stack, run_job, workflow

KEY = KEYS["tenant-a"]


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


def serve(stack: Stack, **limits: Any) -> Iterator[LocalServer]:
    server = LocalServer(("127.0.0.1", 0), EdgeLimits(**limits))
    server.mount(Mount(stack.new_app, stack.blobs, cast(WebsocketHub, None), key_check(stack)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def key_check(stack: Stack) -> Callable[[Mapping[str, str]], str | None]:
    """The server's key check before a body is read, with the stack's keys."""

    def authenticate(headers: Mapping[str, str]) -> str | None:
        key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        return next((tenant for tenant, known in KEYS.items() if known == key), None)

    return authenticate


@pytest.fixture
def server(stack: Stack) -> Iterator[LocalServer]:
    yield from serve(stack)


def healthy(server: LocalServer) -> bool:
    return requests.get(f"{server.url}/v1/health", timeout=5).status_code == 200


def raw(server: LocalServer, data: bytes, *, shut: bool = True, timeout: float = 10) -> bytes:
    """Send ``data`` as it is and read until the server closes."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=timeout) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_20_mb_body_gets_a_readable_413_and_nothing_is_recorded(stack: Stack, server: LocalServer) -> None:
    body = b'{"workflow": "' + b"x" * (20 * 1024 * 1024) + b'"}'
    response = requests.post(
        f"{server.url}/v1/jobs", data=body, headers={"x-api-key": KEY, "Content-Type": "application/json"}, timeout=30
    )

    assert response.status_code == 413
    assert response.json()["error"] == {
        "type": "payload_too_large",
        "message": f"the body is larger than {MAX_API_BODY} bytes",
        "details": "",
        "extra_info": {},
    }
    assert response.headers["Connection"] == "close"
    assert stack.nothing_recorded() and healthy(server)


def test_expect_100_continue_is_refused_before_the_body_is_sent(server: LocalServer) -> None:
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {MAX_API_BODY + 1}\r\nExpect: 100-continue\r\n\r\n"
    )
    status, body = status_and_body(raw(server, head.encode(), shut=False))

    assert status == 413 and body["error"]["type"] == "payload_too_large"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def test_a_chunked_body_is_accepted_within_the_limit(stack: Stack, server: LocalServer) -> None:
    document = json.dumps({"prompt": workflow()}).encode()
    head = f"POST /prompt HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nTransfer-Encoding: chunked\r\n"
    head += "Connection: close\r\n\r\n"
    status, body = status_and_body(raw(server, head.encode() + chunked(document[:10], document[10:])))

    assert status == 200, body
    assert stack.jobs.get("tenant-a", body["prompt_id"]) is not None


def test_a_chunked_body_over_the_limit_is_413(stack: Stack, server: LocalServer) -> None:
    head = f"POST /prompt HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    block = b"x" * (1024 * 1024)
    status, body = status_and_body(raw(server, head.encode() + chunked(*[block] * 11)))

    assert status == 413 and body["error"]["type"] == "payload_too_large"
    assert stack.nothing_recorded() and healthy(server)


@pytest.mark.parametrize(
    ("request_text", "status", "type_"),
    [
        ("BREW /v1/jobs HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
        ("GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: nine\r\n\r\n", 400, "bad_request"),
        ("GET /v1/health HTTP/1.1\r\nHost: x\r\n" + "X-Many: y\r\n" * 100 + "\r\n", 431, "bad_request"),
        ("GET /v1/health HTTP/1.1\r\n\r\n", 400, "bad_request"),  # HTTP/1.1 requires Host
    ],
)
def test_malformed_requests_are_answered_in_json(
    stack: Stack, server: LocalServer, request_text: str, status: int, type_: str
) -> None:
    got_status, body = status_and_body(raw(server, request_text.encode()))

    assert (got_status, body["error"]["type"]) == (status, type_)
    assert stack.nothing_recorded() and healthy(server)


def test_a_known_path_with_another_method_is_405_with_allow(server: LocalServer) -> None:
    response = requests.request("PATCH", f"{server.url}/v1/jobs", headers={"x-api-key": KEY}, timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    assert response.json()["error"]["type"] == "method_not_allowed"


def test_a_client_that_never_sends_its_body_times_out(stack: Stack) -> None:
    for server in serve(stack, read_timeout_s=0.3):
        head = f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Length: 100\r\n\r\n{{"
        status, body = status_and_body(raw(server, head.encode(), shut=False))

        assert status == 408 and body["error"]["type"] == "request_timeout"
        assert stack.nothing_recorded() and healthy(server)


def test_requests_over_the_in_flight_cap_get_503_and_idle_connections_hold_nothing(stack: Stack) -> None:
    for server in serve(stack, max_in_flight=1):
        host, port = server.server_address[:2]
        idle = http.client.HTTPConnection(str(host), port, timeout=5)
        idle.request("GET", "/v1/health")  # keep-alive, then idle: no request in flight
        assert idle.getresponse().read()
        assert healthy(server)

        with socket.create_connection((str(host), port), timeout=5) as half_sent:
            half_sent.sendall(
                f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Length: 9\r\n\r\n{{".encode()
            )
            time.sleep(0.2)  # its body is on the way: the request is in flight
            response = requests.get(f"{server.url}/v1/health", timeout=5)

            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert response.json()["error"]["type"] == "service_unavailable"
        time.sleep(0.2)
        assert healthy(server) and stack.nothing_recorded()
        idle.close()


def test_60_concurrent_clients_are_all_answered(stack: Stack, server: LocalServer) -> None:
    def submit(index: int) -> int:
        with requests.Session() as session:
            body = {"prompt": workflow(seed=index)}
            return session.post(f"{server.url}/prompt", json=body, headers={"x-api-key": KEY}, timeout=60).status_code

    with ThreadPoolExecutor(60) as pool:
        statuses = list(pool.map(submit, range(300)))

    assert statuses == [200] * 300
    assert len(stack.jobs.list("tenant-a", limit=1000)[0]) == 300


def picture(value: object) -> dict[str, object]:
    return {
        "5": {"class_type": "LoadPicture", "inputs": {"image": value}},
        "8": {"class_type": "Save", "inputs": {"images": ["5", 0], "filename_prefix": "pic"}},
    }


DEEP = b"[" * 100_000 + b"]" * 100_000
ESCAPING = {**workflow(), "9": {**workflow()["9"], "inputs": {"images": ["3", 0], "filename_prefix": "../x"}}}
NOT_AN_IMAGE = {"cat.png": {"base64": base64.b64encode(b"GIF89a not really").decode()}}
UNKNOWN_ASSET = {"__type": "core/ASSET", "info": {"id": "00000000-0000-0000-0000-000000000000"}}
INVALID = "prompt_outputs_failed_validation"
# (method, path, body, status, error type or v2 code): every refusal of the edge, over real HTTP.
BAD_REQUESTS: list[tuple[str, str, bytes, int, str]] = [
    ("POST", "/v1/jobs", DEEP, 400, "invalid_json"),
    ("POST", "/prompt", DEEP, 400, "invalid_json"),
    ("POST", "/v1/validate", DEEP, 400, "invalid_json"),
    ("POST", "/v1/jobs", b'{"workflow": "\xff"}', 400, "invalid_json"),
    ("POST", "/prompt", b'{"prompt": "\xff"}', 400, "invalid_json"),
    ("POST", "/prompt", json.dumps({"prompt": ESCAPING}).encode(), 400, INVALID),
    (
        "POST",
        "/prompt",
        json.dumps({"prompt": picture("/etc/passwd")}).encode(),
        400,
        "prompt_outputs_failed_validation",
    ),
    (
        "POST",
        "/prompt",
        json.dumps({"prompt": picture("../../x.png")}).encode(),
        400,
        "prompt_outputs_failed_validation",
    ),
    ("POST", "/prompt", json.dumps({"prompt": picture("http://10.0.0.1/x.png")}).encode(), 400, "invalid_input"),
    (
        "POST",
        "/v1/jobs",
        json.dumps({"workflow": picture("cat.png"), "inputs": NOT_AN_IMAGE}).encode(),
        400,
        "invalid_image",
    ),
    ("POST", "/api/v2/jobs", json.dumps({"workflow": picture(UNKNOWN_ASSET)}).encode(), 422, "missing_asset"),
    ("POST", "/api/v2/jobs", json.dumps({"workflow": {"nodes": [], "links": []}}).encode(), 422, "workflow_format_ui"),
    ("PATCH", "/v1/jobs", b"{}", 405, "method_not_allowed"),
    ("BREW", "/prompt", b"{}", 405, "method_not_allowed"),
    ("POST", "/v1/jobs", b"x" * (MAX_API_BODY + 1), 413, "payload_too_large"),
]


def test_every_bad_request_is_refused_cleanly(
    stack: Stack, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refusal is the exact 4xx, nothing is stored, queued or published, the server answers the next
    request, and the log holds no traceback."""
    caplog.set_level(logging.DEBUG)
    for method, path, body, status, type_ in BAD_REQUESTS:
        response = requests.request(
            method,
            f"{server.url}{path}",
            data=body,
            headers={"x-api-key": KEY, "Content-Type": "application/json"},
            timeout=30,
        )
        error = response.json()["error"]
        assert (response.status_code, error.get("type", error.get("code"))) == (status, type_), (path, error)
        assert healthy(server)

    assert not [record for record in caplog.records if record.exc_info]
    assert stack.nothing_recorded()


def test_an_announced_body_over_the_limit_is_answered_before_it_is_sent(server: LocalServer) -> None:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=5)
    connection.putrequest("POST", "/v1/jobs")
    connection.putheader("x-api-key", KEY)
    connection.putheader("Content-Length", str(MAX_API_BODY + 1))
    connection.endheaders()

    response = connection.getresponse()

    assert response.status == 413 and b"larger than" in response.read()
    assert response.getheader("Connection") == "close"
    connection.close()


def test_a_taken_port_is_a_one_line_error(server: LocalServer) -> None:
    host, port = str(server.server_address[0]), server.server_address[1]

    with pytest.raises(ListenError, match=f"^cannot listen on {host}:{port}: Address already in use$"):
        LocalServer((host, port))


def test_the_v2_event_stream_stays_open_locally_until_the_job_finishes(stack: Stack) -> None:
    for server in serve(stack, events_poll_s=0.05):
        job_id = requests.post(
            f"{server.url}/api/v2/jobs", json={"workflow": workflow()}, headers={"x-api-key": KEY}, timeout=5
        ).json()["id"]
        host, port = server.server_address[:2]
        connection = http.client.HTTPConnection(str(host), port, timeout=10)
        connection.request("GET", f"/api/v2/jobs/{job_id}/events", headers={"Authorization": f"Bearer {KEY}"})
        response = connection.getresponse()
        first = response.readline() + response.readline() + response.readline()

        run_job(stack, job_id)  # the worker claims it …
        time.sleep(0.2)
        stack.jobs.update_progress(job_id, Progress(node="3", step=1, max=4, nodes_done=1, nodes_total=3))
        time.sleep(0.2)
        stack.jobs.transition(  # … and finishes it
            job_id, {JobStatus.RUNNING}, JobStatus.SUCCEEDED, finished_at=datetime.now(UTC), outputs=[]
        )
        rest = response.read()

        assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
        assert first == b'event: status\ndata: {"status":"queued","queue_position":1}\n\n'
        events = [frame.split(b"\n")[0] for frame in rest.strip().split(b"\n\n")]
        assert events == [b"event: status", b"event: progress", b"event: status"]
        assert rest.endswith(b'data: {"status":"succeeded","queue_position":null}\n\n')
        connection.close()


# -- framing, concurrency and connection limits, over raw sockets ---------------------------------------------


AMBIGUOUS = [
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "Content-Length"),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "Content-Length"),
    (b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", "Content-Length"),
    (b"Content-Length: 2, 2\r\n\r\n{}", "Content-Length"),
    (b"Content-Length: +2\r\n\r\n{}", "Content-Length"),
    (b"Content-Length: -2\r\n\r\n{}", "Content-Length"),
    (b"Transfer-Encoding: gzip\r\n\r\n{}", "Transfer-Encoding"),
    (b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "Transfer-Encoding"),
    (b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", "chunk size"),
    (b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n", "chunk size"),
]


@pytest.mark.parametrize(("framing", "reason"), AMBIGUOUS)
@pytest.mark.parametrize("key", [KEY, None])
def test_ambiguous_framing_is_a_400_that_closes_the_connection(
    stack: Stack, server: LocalServer, framing: bytes, reason: str, key: str | None
) -> None:
    """Whatever the key, the request is refused, nothing recorded, and a request pipelined behind it is not
    served (the connection closes after the 400)."""
    auth = f"x-api-key: {key}\r\n".encode() if key else b""
    pipelined = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    response = raw(server, b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n" + auth + framing + pipelined)

    status, body = status_and_body(response)
    assert status == 400 and body["error"]["type"] == "bad_request"
    assert reason.lower() in body["error"]["message"].lower()
    assert response.count(b"HTTP/1.1 ") == 1
    assert stack.nothing_recorded() and healthy(server)


@pytest.mark.parametrize("key", [KEY, None])
def test_a_huge_chunked_body_is_413_within_the_limit_with_or_without_a_key(
    stack: Stack, server: LocalServer, key: str | None
) -> None:
    auth = f"x-api-key: {key}\r\n" if key else ""
    request = f"POST /prompt HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
    block = b"x" * (4 * 1024 * 1024)
    status, body = status_and_body(raw(server, request + chunked(*[block] * 4), timeout=30))

    assert status == 413 and body["error"]["type"] == "payload_too_large"
    assert stack.nothing_recorded() and healthy(server)


def test_the_key_is_checked_before_the_body_is_read(
    stack: Stack, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4.6 MB deeply nested body without a valid key: the route table answers 401/403 without its body."""
    seen: list[bytes] = []
    build_event = edge.build_event

    def spy(method: str, path: str, query: str, headers: Any, body: bytes, source_ip: str) -> dict[str, Any]:
        seen.append(body)
        return build_event(method, path, query, headers, body, source_ip)

    monkeypatch.setattr(edge, "build_event", spy)
    nested = b"[" * 2_300_000 + b"]" * 2_300_000
    for headers, status in (({}, 401), ({"x-api-key": "not-a-key"}, 403)):
        response = requests.post(f"{server.url}/v1/jobs", data=nested, headers=headers, timeout=30)
        assert response.status_code == status and response.json()["error"]["type"] in ("unauthorized", "forbidden")
    assert seen == [b"", b""]
    assert stack.nothing_recorded()


@contextmanager
def in_flight(server: LocalServer, path: str, count: int) -> Iterator[list[Future[requests.Response]]]:
    """``count`` requests posting a workflow to ``path``, left in flight for half a second, then the block."""
    with ThreadPoolExecutor(count) as pool:
        body, headers = {"workflow": workflow()}, {"x-api-key": KEY}
        futures = [pool.submit(requests.post, f"{server.url}{path}", json=body, headers=headers) for _ in range(count)]
        time.sleep(0.5)
        yield futures


def answers_health_at_once(server: LocalServer) -> bool:
    started = time.monotonic()
    return healthy(server) and time.monotonic() - started < 0.5


def test_a_slow_request_does_not_hold_up_health(
    stack: Stack, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No lock around the route table: health answers while three validations take 2 s each."""
    validate = stack.service.validate

    def slow_validate(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2)
        return validate(*args, **kwargs)

    monkeypatch.setattr(stack.service, "validate", slow_validate)
    with in_flight(server, "/v1/validate", 3) as slow:
        assert answers_health_at_once(server)
        assert [future.result().status_code for future in slow] == [200] * 3


def test_130_idle_keep_alive_clients_do_not_lock_out_health(server: LocalServer) -> None:
    host, port = server.server_address
    clients = [http.client.HTTPConnection(host, port, timeout=5) for _ in range(130)]
    for client in clients:
        client.request("GET", "/v1/health")
        assert client.getresponse().read()

    response = requests.get(f"{server.url}/v1/health", timeout=5)

    assert response.status_code == 200
    for client in clients:
        client.close()


def closed_within(server: LocalServer, request: bytes, seconds: float) -> bool:
    """Whether the server closes a connection that sent ``request`` (and then nothing) within ``seconds``."""
    with socket.create_connection(server.server_address, timeout=seconds + 5) as sock:
        sock.sendall(request)
        started = time.monotonic()
        while sock.recv(65536):
            pass
        return time.monotonic() - started < seconds


def test_idle_and_half_sent_connections_are_closed(stack: Stack) -> None:
    for server in serve(stack, keep_alive_s=1, read_timeout_s=1):
        assert closed_within(server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 2)  # idle after its answer
        assert closed_within(server, b"", 2)  # never sent anything
        assert closed_within(server, b"GET /v1/health HTTP/1.1\r\nHost:", 2)  # half-sent headers
        assert healthy(server)


def test_a_write_locked_database_does_not_hold_up_health(stack: Stack, server: LocalServer, tmp_path: Path) -> None:
    """Submits wait for the lock (each on its own thread); health, which needs no database, does not."""
    locker = sqlite3.connect(tmp_path / "jobs.sqlite", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with in_flight(server, "/v1/jobs", 4) as submits:
        assert answers_health_at_once(server)
        assert not any(future.done() for future in submits)  # still waiting for the lock
        locker.execute("ROLLBACK")
        assert [future.result().status_code for future in submits] == [202] * 4
    locker.close()


def test_keep_alive_answers_do_not_wait_for_delayed_acks(server: LocalServer) -> None:
    """An answer goes out in two writes (head, body): without TCP_NODELAY each would wait ~40 ms for the
    client's delayed ACK."""
    connection = http.client.HTTPConnection(*server.server_address, timeout=5)
    samples = []
    for _ in range(21):
        started = time.perf_counter()
        connection.request("GET", "/v1/health")
        connection.getresponse().read()
        samples.append(time.perf_counter() - started)
    connection.close()

    assert sorted(samples)[10] < 0.03
