"""ComfyUI's websocket on the local server: the RFC 6455 framing on its own, then over a live stack (one
worker): the message order for a prompt (reference §1.10), errors, isolation between clients and tenants."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import websocket

from comfyserve.localstack.stack import LocalStack
from comfyserve.localstack.websocket import (
    CloseCode,
    HandshakeError,
    Opcode,
    ProtocolError,
    WebSocket,
    accept_key,
    check_upgrade,
    close_payload,
    encode_frame,
    read_frame,
)
from tests.integration.stack_helpers import IMAGE_PACKS, STACK_NODES, Api, fail_workflow, wait_workflow

KEYS = {"alice": "alice-key", "bob": "bob-key"}
UPGRADE = {
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """A masked frame as a client sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# -- framing --------------------------------------------------------------------------------------------


def test_the_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert check_upgrade(UPGRADE) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"upgrade": "h2c"}, "expected 'Upgrade: websocket'"),
        ({"connection": "keep-alive"}, "expected 'Connection: Upgrade'"),
        ({"sec-websocket-version": "8"}, "only websocket version 13 is supported"),
        ({"sec-websocket-key": base64.b64encode(b"short").decode()}, "Sec-WebSocket-Key must be 16 bytes"),
        ({"sec-websocket-key": "not base64!"}, "Sec-WebSocket-Key is not base64"),
    ],
)
def test_bad_upgrades_are_refused_with_the_reason(change: dict[str, str], reason: str) -> None:
    with pytest.raises(HandshakeError, match=reason):
        check_upgrade({**UPGRADE, **change})


@pytest.mark.parametrize(("size", "header"), [(125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"), (70000, b"\x81\x7f")])
def test_server_frames_use_the_shortest_length_encoding(size: int, header: bytes) -> None:
    frame = encode_frame(Opcode.TEXT, b"a" * size)
    assert frame.startswith(header) and frame.endswith(b"a" * size)
    assert len(frame) == size + {125: 2, 126: 4, 70000: 10}[size]


def test_client_frames_are_unmasked_and_fragments_reassembled() -> None:
    stream = io.BytesIO(
        client_frame(Opcode.TEXT, b"hel", fin=False)
        + client_frame(Opcode.PING, b"hi")
        + client_frame(Opcode.CONTINUATION, b"lo" * 100)
    )
    out = io.BytesIO()
    ws = WebSocket(stream, out)
    assert ws.receive() == (Opcode.TEXT, b"hel" + b"lo" * 100)
    assert out.getvalue() == encode_frame(Opcode.PONG, b"hi")  # the ping was answered in between
    assert ws.receive() is None and ws.closed  # end of stream


def test_a_close_frame_is_answered_and_ends_the_connection() -> None:
    out = io.BytesIO()
    ws = WebSocket(io.BytesIO(client_frame(Opcode.CLOSE, struct.pack("!H", 1000))), out)
    assert ws.receive() is None
    assert out.getvalue() == encode_frame(Opcode.CLOSE, struct.pack("!H", CloseCode.NORMAL))
    with pytest.raises(ConnectionError):
        ws.send_text("late")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\x81\x02hi", "client frames must be masked"),
        (b"\xc1\x80\x00\x00\x00\x00", "reserved bits set"),
        (b"\x83\x80\x00\x00\x00\x00", "unknown opcode 0x3"),
        (b"\x09\x80\x00\x00\x00\x00", "control frames must be final"),
    ],
)
def test_malformed_client_frames_are_protocol_errors(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        read_frame(io.BytesIO(frame))


def test_a_protocol_error_closes_with_1002() -> None:
    out = io.BytesIO()
    assert WebSocket(io.BytesIO(b"\x81\x02hi"), out).receive() is None
    assert out.getvalue() == encode_frame(
        Opcode.CLOSE, close_payload(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
    )


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
    assert opcode == websocket.ABNF.OPCODE_CLOSE and struct.unpack("!H", frame.data[:2])[0] == CloseCode.GOING_AWAY
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
        assert f"Sec-WebSocket-Accept: {accept_key(key)}\r\n".encode() in head
        assert read_frame_unmasked(reader)[0] == Opcode.TEXT  # the status message
        raw.sendall(client_frame(Opcode.PING, b"are you there"))
        assert read_frame_unmasked(reader) == (Opcode.PONG, b"are you there")
        raw.sendall(client_frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert read_frame_unmasked(reader)[0] == Opcode.CLOSE


def read_frame_unmasked(reader: Any) -> tuple[int, bytes]:
    first, second = reader.read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", reader.read(2))
    return first & 0x0F, reader.read(length)
