"""A minimal RFC 6455 server side: the opening handshake, frame reading and writing, ping and close.

Enough for ComfyUI's websocket: the server sends text frames (JSON messages), answers pings, and reads the
client's text frames (ComfyUI clients send at most a ``feature_flags`` message). Client frames must be masked
(RFC 6455 §5.1); fragmented messages are reassembled; extensions are not negotiated.
"""

from __future__ import annotations

import base64
import contextlib
import enum
import hashlib
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE_BYTES = 1 << 20


class Reader(Protocol):
    def read(self, size: int, /) -> bytes | None: ...


class Writer(Protocol):
    def write(self, data: bytes, /) -> int | None: ...

    def flush(self) -> None: ...


class Opcode(enum.IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    TOO_BIG = 1009


class ProtocolError(Exception):
    def __init__(self, reason: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


class HandshakeError(ValueError):
    """The request is not a valid websocket upgrade; the message says why (sent back with a 400)."""


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((client_key + GUID).encode("ascii"), usedforsecurity=False).digest()
    return base64.b64encode(digest).decode("ascii")


def check_upgrade(headers: Mapping[str, str]) -> str:
    """Validate an upgrade request's headers (names lower-cased); returns the accept key to send back."""
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("expected 'Upgrade: websocket'")
    if "upgrade" not in {token.strip().lower() for token in headers.get("connection", "").split(",")}:
        raise HandshakeError("expected 'Connection: Upgrade'")
    if headers.get("sec-websocket-version") != "13":
        raise HandshakeError("only websocket version 13 is supported")
    key = headers.get("sec-websocket-key", "")
    try:
        nonce = base64.b64decode(key, validate=True)
    except ValueError as exc:
        raise HandshakeError("Sec-WebSocket-Key is not base64") from exc
    if len(nonce) != 16:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes, base64-encoded")
    return accept_key(key)


def encode_frame(opcode: Opcode, payload: bytes = b"") -> bytes:
    """One unmasked, final frame (servers never mask, RFC 6455 §5.1)."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    if length < 126:
        head += bytes([length])
    elif length < 1 << 16:
        head += bytes([126]) + struct.pack("!H", length)
    else:
        head += bytes([127]) + struct.pack("!Q", length)
    return head + payload


def close_payload(code: CloseCode, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()[:123]


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: Opcode
    payload: bytes


def _read_exact(stream: Reader, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) < size:
        raise EOFError("connection closed mid-frame")
    return data


def read_frame(stream: Reader, max_bytes: int = MAX_MESSAGE_BYTES) -> Frame:
    """Read one client frame; raises EOFError at end of stream and ProtocolError on a malformed frame."""
    first, second = _read_exact(stream, 2)
    if first & 0x70:
        raise ProtocolError("reserved bits set without a negotiated extension")
    try:
        opcode = Opcode(first & 0x0F)
    except ValueError:
        raise ProtocolError(f"unknown opcode {first & 0x0F:#x}") from None
    if not second & 0x80:
        raise ProtocolError("client frames must be masked")
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", _read_exact(stream, 2))
    elif length == 127:
        (length,) = struct.unpack("!Q", _read_exact(stream, 8))
    fin = bool(first & 0x80)
    if opcode >= Opcode.CLOSE and (length > 125 or not fin):
        raise ProtocolError("control frames must be final and at most 125 bytes")
    if length > max_bytes:
        raise ProtocolError("message too big", CloseCode.TOO_BIG)
    mask = _read_exact(stream, 4)
    masked = _read_exact(stream, length)
    return Frame(fin, opcode, _unmask(masked, mask))


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return data
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


class WebSocket:
    """One accepted connection: thread-safe sends, and :meth:`receive` for the reader thread."""

    def __init__(self, rfile: Reader, wfile: Writer) -> None:
        self._rfile = rfile
        self._wfile = wfile
        self._send_lock = threading.Lock()
        self.closed = False

    def _send(self, opcode: Opcode, payload: bytes) -> None:
        with self._send_lock:
            if self.closed and opcode is not Opcode.CLOSE:
                raise ConnectionError("websocket closed")
            self._wfile.write(encode_frame(opcode, payload))
            self._wfile.flush()

    def send_text(self, text: str) -> None:
        self._send(Opcode.TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self._send(Opcode.BINARY, data)

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str = "") -> None:
        """Send a close frame once; the reader loop ends when the peer answers or the socket drops."""
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
        with contextlib.suppress(OSError):
            self._send(Opcode.CLOSE, close_payload(code, reason))

    def receive(self) -> tuple[Opcode, bytes] | None:
        """The next data message (TEXT or BINARY, reassembled); answers pings; ``None`` once closed."""
        parts: list[bytes] = []
        message_opcode: Opcode | None = None
        while True:
            try:
                frame = read_frame(self._rfile)
            except (EOFError, OSError):
                self.closed = True
                return None
            except ProtocolError as exc:
                self.close(exc.code, str(exc))
                return None
            if frame.opcode is Opcode.PING:
                self._send(Opcode.PONG, frame.payload)
            elif frame.opcode is Opcode.CLOSE:
                self.close()
                return None
            elif frame.opcode is Opcode.PONG:
                continue
            else:
                if (frame.opcode is Opcode.CONTINUATION) != (message_opcode is not None):
                    self.close(CloseCode.PROTOCOL_ERROR, "bad fragmentation")
                    return None
                message_opcode = message_opcode or frame.opcode
                parts.append(frame.payload)
                if sum(map(len, parts)) > MAX_MESSAGE_BYTES:
                    self.close(CloseCode.TOO_BIG, "message too big")
                    return None
                if frame.fin:
                    return message_opcode, b"".join(parts)
