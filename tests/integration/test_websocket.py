"""ComfyUI's websocket on the local server: the edge's limits over raw sockets (exact close codes), then over
a live stack (one worker): the message order for a prompt (reference §1.10), errors, isolation between clients
and tenants."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import websocket

from comfyserve.localstack.edge import EdgeLimits, Mount
from comfyserve.localstack.feed import EventFeed
from comfyserve.localstack.server import LocalServer
from comfyserve.localstack.stack import LocalStack
from comfyserve.localstack.ws_hub import GOING_AWAY, WebsocketHub
from tests.api_stack import make_stack
from tests.integration.stack_helpers import IMAGE_PACKS, STACK_NODES, Api, fail_workflow, wait_workflow

KEYS = {"alice": "alice-key", "bob": "bob-key"}
CONT, TEXT, CLOSE, PING, PONG = 0x0, 0x1, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked frame as a client sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- the edge's limits, over real sockets (a server with a hub, no worker) ---------------------------------


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[LocalServer]:
    stack = make_stack(tmp_path)
    hub = WebsocketHub(EventFeed(tmp_path / "feed.sqlite"), lambda tenant: 0)
    hub.start()
    server = LocalServer(("127.0.0.1", 0), EdgeLimits(max_websockets=2, ws_max_fragments=100))
    server.mount(
        Mount(stack.new_app, stack.blobs, hub, lambda headers: "tenant-a" if headers.get("x-api-key") else None)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    hub.stop()
    server.shutdown()
    server.server_close()


class RawSocket:
    """A websocket client that sends frames exactly as given."""

    def __init__(self, server: LocalServer, client_id: str = "raw") -> None:
        host, port = server.server_address
        self.sock = socket.create_connection((host, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"x-api-key: {KEYS['alice']}\r\n\r\n"
            ).encode()
        )
        self.reader = self.sock.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self.reader.read(1)
        self.head = head
        if head.startswith(b"HTTP/1.1 101 "):
            assert f"Sec-WebSocket-Accept: {accept_key(key)}\r\n".encode().lower() in head.lower()
            assert read_frame_unmasked(self.reader)[0] == TEXT  # the status message

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def close_code(self) -> int:
        """The code of the close frame the server sends next (other frames skipped)."""
        while True:
            opcode, payload = read_frame_unmasked(self.reader)
            if opcode == CLOSE:
                return int(struct.unpack("!H", payload[:2])[0])


def accept_key(client_key: str) -> str:
    digest = hashlib.sha1((client_key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode(), usedforsecurity=False)
    return base64.b64encode(digest.digest()).decode()


def test_fragments_are_reassembled_around_a_ping(edge: LocalServer) -> None:
    raw = RawSocket(edge)
    raw.sock.sendall(
        client_frame(TEXT, b'{"type": "feat', fin=False)
        + client_frame(PING, b"hi")
        + client_frame(CONT, b'ure_flags"}')
    )
    assert read_frame_unmasked(raw.reader) == (PONG, b"hi")
    opcode, payload = read_frame_unmasked(raw.reader)
    assert opcode == TEXT and json.loads(payload)["type"] == "feature_flags"


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([client_frame(TEXT, b"\xff\xfe not utf-8")], 1007),
        ([client_frame(TEXT, b"x" * 70_000, fin=False), client_frame(CONT, b"x" * 1_000_000)], 1009),
        ([client_frame(TEXT, b"", fin=False)] + [client_frame(CONT, b"", fin=False)] * 100, 1009),  # 101 fragments
        ([b"\x81\x02hi"], 1002),  # not masked
        ([b"\xc1\x80\x00\x00\x00\x00"], 1002),  # reserved bits
        ([client_frame(CONT, b"x")], 1002),  # a continuation of nothing
    ],
)
def test_bad_messages_close_with_the_exact_code(edge: LocalServer, frames: list[bytes], code: int) -> None:
    raw = RawSocket(edge)
    raw.sock.sendall(b"".join(frames))
    assert raw.close_code() == code
    assert requests.get(f"{edge.url}/v1/health", timeout=5).status_code == 200


def test_60k_empty_continuation_frames_cost_no_more_than_the_fragment_cap(
    edge: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The frames behind the cap (read with it, or after the close) are dropped quietly."""
    raw = RawSocket(edge)
    started = time.process_time()
    with contextlib.suppress(OSError):  # the server closes after 100 fragments; the rest may meet a reset
        raw.sock.sendall(client_frame(TEXT, b"", fin=False) + client_frame(CONT, b"", fin=False) * 60_000)
    assert raw.close_code() == 1009
    assert time.process_time() - started < 2.0  # the server runs in this process: its CPU is counted here
    raw.close()
    time.sleep(0.2)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_an_upgrade_elsewhere_than_the_websocket_paths_is_a_404(edge: LocalServer) -> None:
    response = requests.get(
        f"{edge.url}/v1/health",
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        },
        timeout=5,
    )
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


def test_open_websockets_are_capped_with_a_503(edge: LocalServer) -> None:
    first, second = RawSocket(edge, "one"), RawSocket(edge, "two")
    third = RawSocket(edge, "three")

    status_line, _, rest = third.head.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 503 ")
    assert (
        json.loads(third.reader.read(int(rest.lower().split(b"content-length: ")[1].split(b"\r\n")[0])))["error"][
            "type"
        ]
        == "service_unavailable"
    )
    first.close()
    time.sleep(0.3)
    assert RawSocket(edge, "four").head.startswith(b"HTTP/1.1 101 ")
    second.close()


# -- over a live stack ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        tmp_path_factory.mktemp("ws"),
        port=0,
        workers=1,
        api_keys=KEYS,
        custom_nodes=[STACK_NODES],
        node_packs=IMAGE_PACKS,
    ) as local:
        local.wait_ready()
        yield local


def connect(stack: LocalStack, client_id: str, key: str | None = KEYS["alice"], path: str = "/ws") -> Any:
    ws = websocket.WebSocket()
    ws.settimeout(20)
    url = f"{stack.url.replace('http://', 'ws://')}{path}?clientId={client_id}"
    ws.connect(url, header=[f"x-api-key: {key}"] if key else [])
    return ws


def queue_prompt(
    stack: LocalStack, prompt: dict[str, Any], client_id: str, key: str = KEYS["alice"], **fields: Any
) -> str:
    response = Api(stack.url, key).http.post(
        f"{stack.url}/prompt", json={"prompt": prompt, "client_id": client_id, **fields}, timeout=10
    )
    assert response.status_code == 200, response.text
    prompt_id: str = response.json()["prompt_id"]
    return prompt_id


def messages_until_done(ws: Any, prompt_id: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = json.loads(ws.recv())
        messages.append(message)
        data = message["data"]
        if message["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            return messages


def test_a_prompt_streams_comfyuis_messages_in_order(stack: LocalStack) -> None:
    ws = connect(stack, "client-order")
    hello = json.loads(ws.recv())
    assert hello == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "client-order"}}
    prompt_id = queue_prompt(stack, wait_workflow(0.2, steps=2, color=101), "client-order")
    messages = messages_until_done(ws, prompt_id)
    ws.close()

    summary = [(m["type"], m["data"].get("node")) for m in messages if m["type"] != "progress_state"]
    assert summary == [
        ("execution_start", None),
        ("execution_cached", None),
        ("executing", "1"),
        ("executing", "2"),
        ("progress", "2"),
        ("progress", "2"),
        ("executing", "3"),
        ("executed", "3"),
        ("execution_success", None),
        ("status", None),
        ("executing", None),
    ]
    assert all(m["data"].get("prompt_id") == prompt_id for m in messages if m["type"] != "status")
    assert [(m["data"]["value"], m["data"]["max"]) for m in messages if m["type"] == "progress"] == [(1, 2), (2, 2)]
    finished = [
        n["node_id"]
        for m in messages
        if m["type"] == "progress_state"
        for n in m["data"]["nodes"].values()
        if n["state"] == "finished"
    ]
    assert finished == ["1", "2", "3"]
    executed = next(m for m in messages if m["type"] == "executed")["data"]["output"]
    assert executed == {"images": [{"filename": "wait_00001_.png", "subfolder": prompt_id, "type": "output"}]}
    view = Api(stack.url, KEYS["alice"]).http.get(f"{stack.url}/view", params=executed["images"][0], timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")


def test_a_failing_prompt_sends_execution_error_then_the_end(stack: LocalStack) -> None:
    ws = connect(stack, "client-error", path="/api/ws")
    assert json.loads(ws.recv())["data"]["sid"] == "client-error"
    prompt_id = queue_prompt(stack, fail_workflow("no luck"), "client-error")
    messages = messages_until_done(ws, prompt_id)
    ws.close()

    (error,) = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert (error["node_id"], error["node_type"], error["exception_message"]) == ("2", "StackTestFail", "no luck")
    assert [m["type"] for m in messages[-2:]] == ["status", "executing"]
    assert "execution_success" not in [m["type"] for m in messages]


def test_messages_reach_only_the_prompts_client_of_the_same_tenant(stack: LocalStack) -> None:
    mine = connect(stack, "client-shared")
    other_client = connect(stack, "client-other")
    other_tenant = connect(stack, "client-shared", key=KEYS["bob"])
    for ws in (mine, other_client, other_tenant):
        assert json.loads(ws.recv())["type"] == "status"

    prompt_id = queue_prompt(stack, wait_workflow(0.0, steps=1, color=202), "client-shared")
    assert messages_until_done(mine, prompt_id)[-1]["data"] == {"node": None, "prompt_id": prompt_id}
    for ws in (other_client, other_tenant):
        ws.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            ws.recv()
        ws.close()
    mine.close()


def test_a_prompt_id_another_tenant_used_is_the_callers_own_in_every_message(stack: LocalStack) -> None:
    alices = queue_prompt(stack, wait_workflow(0.0, steps=1, color=211), "client-alice", prompt_id="chosen-1")
    ws = connect(stack, "client-bob", key=KEYS["bob"])
    assert json.loads(ws.recv())["type"] == "status"
    bobs = queue_prompt(stack, wait_workflow(0.0, steps=1, color=212), "client-bob", KEYS["bob"], prompt_id="chosen-1")
    messages = messages_until_done(ws, "chosen-1")
    ws.close()

    assert alices == bobs == "chosen-1"
    assert {m["data"].get("prompt_id") for m in messages if m["type"] != "status"} == {"chosen-1"}
    assert "execution_success" in [m["type"] for m in messages]
    executed = next(m for m in messages if m["type"] == "executed")["data"]["output"]
    assert executed == {"images": [{"filename": "wait_00001_.png", "subfolder": "chosen-1", "type": "output"}]}
    bob = Api(stack.url, KEYS["bob"]).http
    view = bob.get(f"{stack.url}/view", params=executed["images"][0], timeout=10)
    assert view.status_code == 200 and view.content.startswith(b"\x89PNG")
    history = bob.get(f"{stack.url}/history/chosen-1", timeout=10).json()
    assert history["chosen-1"]["outputs"]["3"]["images"] == executed["images"]
    assert [job["id"] for job in bob.get(f"{stack.url}/api/jobs", timeout=10).json()["jobs"]] == ["chosen-1"]


def test_a_reused_client_id_replaces_the_old_socket(stack: LocalStack) -> None:
    first = connect(stack, "client-reused")
    first.recv()
    second = connect(stack, "client-reused")
    assert json.loads(second.recv())["data"]["sid"] == "client-reused"
    opcode, frame = first.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and struct.unpack("!H", frame.data[:2])[0] == GOING_AWAY
    second.close()


def test_the_websocket_needs_an_api_key(stack: LocalStack) -> None:
    for key, status in ((None, 401), ("wrong-key", 401)):
        with pytest.raises(websocket.WebSocketBadStatusException) as caught:
            connect(stack, "client-anon", key=key)
        assert caught.value.status_code == status


def test_a_raw_handshake_answers_101_with_the_accept_key_and_pongs(stack: LocalStack) -> None:
    parts = urlsplit(stack.url)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10) as raw:
        raw.sendall(
            (
                f"GET /ws?clientId=raw HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"x-api-key: {KEYS['alice']}\r\n\r\n"
            ).encode()
        )
        reader = raw.makefile("rb")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += reader.read(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {accept_key(key)}\r\n".encode().lower() in head.lower()
        assert read_frame_unmasked(reader)[0] == TEXT  # the status message
        raw.sendall(client_frame(PING, b"are you there"))
        assert read_frame_unmasked(reader) == (PONG, b"are you there")
        raw.sendall(client_frame(CLOSE, struct.pack("!H", 1000)))
        assert read_frame_unmasked(reader)[0] == CLOSE


def read_frame_unmasked(reader: Any) -> tuple[int, bytes]:
    first, second = reader.read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", reader.read(8))
    return first & 0x0F, reader.read(length)
