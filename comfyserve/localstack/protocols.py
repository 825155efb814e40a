"""uvicorn's HTTP/1.1 (httptools, i.e. llhttp) and websocket (websockets, sans-I/O) protocols with the local
edge's limits.

* a request the parser refuses (a bad chunk size, a ``Content-Length`` that is signed, repeated or sent with
  ``Transfer-Encoding``, an unknown transfer coding, a malformed request line) is answered in the service's
  JSON error shape, naming the reason (an unknown method: 405);
* a client may shut its sending side after its request (and read the answer);
* a connection must complete each request's headers within the read timeout, from the moment it opens or its
  last answer was sent (uvicorn's keep-alive timer stops at the first byte), else it is closed;
* a websocket message may be split into at most ``ws_max_fragments`` frames (its size is capped by the
  library's ``max_size``): the 1009 close comes before the fragments cost anything more (reads are parsed
  :data:`FEED_BYTES` per turn of the event loop, and not past the close).
"""

from __future__ import annotations

import asyncio
import sys
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from comfyserve.localstack.edge import EdgeLimits, error_body

MESSAGE_TOO_BIG = 1009
FEED_BYTES = 512
"""A websocket's reads are parsed this much per turn of the event loop, reading paused until the rest is parsed:
a read of tiny frames would otherwise be parsed whole (43,000 empty frames in 256 kB) before the fragment cap
could close the socket, and a flood of them on a few sockets would hold the loop for everyone (85 empty
frames is a fraction of a millisecond; a legitimate 1 MiB message costs 2048 turns, each cheap)."""


def edge_protocols(limits: EdgeLimits) -> tuple[type[HttpToolsProtocol], type[WebSocketsSansIOProtocol]]:
    """The two protocol classes for a uvicorn ``Config`` (``http=``, ``ws=``), bound to ``limits``."""

    class EdgeHttp(_EdgeHttp):
        header_timeout_s = limits.read_timeout_s

    class EdgeWebsocket(_EdgeWebsocket):
        max_fragments = limits.ws_max_fragments

    return EdgeHttp, EdgeWebsocket


class CoalescedWrites:
    """A transport whose writes within one turn of the event loop leave in one ``send``: an answer's head and
    body are two ASGI messages, and every socket call costs the loop the GIL, which it then waits to take back
    from the route threads (issue 16's bench: a third of the loop's time per request went to the second send)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _EdgeHttp(HttpToolsProtocol):
    header_timeout_s: float
    _deadline: asyncio.TimerHandle | None = None
    _half_closed = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalesced = CoalescedWrites(transport, asyncio.get_running_loop())
        super().connection_made(coalesced)  # type: ignore[arg-type]
        self._await_headers()

    def on_headers_complete(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._half_closed:
            self.transport.close()
        elif not self.pipeline:
            self._await_headers()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """A client that shuts its side after sending a request still reads the answer."""
        if self.cycle is None or self.cycle.response_complete or self.cycle.more_body:
            return None  # nothing to answer, or a request that can no longer arrive whole: the transport closes
        self._half_closed = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        if self.transport.is_closing():
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.header_timeout_s, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this while handling the parser's error, which says what was wrong."""
        error = sys.exc_info()[1]
        if isinstance(error, httptools.HttpParserInvalidMethodError):
            status, body = 405, error_body("method_not_allowed", "the request's method is not supported")
        else:
            status, body = 400, error_body("bad_request", f"malformed HTTP request: {error or msg}")
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


class _EdgeWebsocket(WebSocketsSansIOProtocol):
    max_fragments: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fragments = 0
        self._unparsed = bytearray()

    def handle_text(self, event: Frame) -> None:
        self._fragments = 1
        super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        self._fragments = 1
        super().handle_bytes(event)

    def data_received(self, data: bytes) -> None:
        feeding = bool(self._unparsed)  # a turn is already scheduled for what is left
        self._unparsed += data
        if not feeding:
            self._feed()

    def _feed(self) -> None:
        """Parse the next slice of what was read; the rest waits for the loop's next turn, reading paused."""
        if self.close_sent or self.transport.is_closing():
            self._unparsed.clear()  # closed by a cap: the rest is not read
            return
        part = bytes(self._unparsed[:FEED_BYTES])
        del self._unparsed[:FEED_BYTES]
        super().data_received(part)
        if self._unparsed and not (self.close_sent or self.transport.is_closing()):
            self.transport.pause_reading()
            self.loop.call_soon(self._feed)
        elif not self.read_paused:  # uvicorn pauses reading of its own while the application lags
            self.transport.resume_reading()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True  # a refused handshake is complete (uvicorn would log it as an error)

    def handle_cont(self, event: Frame) -> None:
        if self.close_sent:
            return  # frames that came in the same read as the ones that closed the socket
        self._fragments += 1
        if self._fragments > self.max_fragments:
            self.frames = []
            self.conn.send_close(MESSAGE_TOO_BIG, f"a message in more than {self.max_fragments} fragments")
            self.handle_parser_exception()
            return
        super().handle_cont(event)
