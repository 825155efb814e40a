"""The local HTTP server: the route table through API Gateway-shaped events, presigned blob URLs, websocket.

* every request that is not one of the two below becomes a REST proxy event for ``app.resolve`` (the same
  route table Lambda serves); Powertools keeps the current event on a class attribute, so resolution is
  serialised by a lock;
* ``GET|PUT /v1/blobs/{key}?expires&sig`` serves the local blob store's presigned URLs (S3's role);
* ``GET /ws?clientId=`` (also ``/api/ws``) upgrades to ComfyUI's websocket.

Every answer the server gives itself is JSON in the service's error shape. A body over the limit is read and
discarded before the 413 (a client that sends the whole body first still reads the answer), or refused
before it is sent when the client asks ``Expect: 100-continue``; chunked bodies are read within the same
limit. Reads time out, and at most ``max_connections`` requests are handled at once: the others get a 503
with ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from comfyserve.adapters.local.blobs import LocalBlobStore, PresignedUrlInvalid
from comfyserve.engine.errors import ComfyServeError
from comfyserve.localstack import sse
from comfyserve.localstack.apigw import HttpResponse, LambdaContextStub, build_event, parse_response
from comfyserve.localstack.websocket import HandshakeError, WebSocket, check_upgrade
from comfyserve.localstack.ws_hub import WebsocketHub
from comfyserve.ports import BlobNotFound, InvalidKey, validate_key

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_API_BODY = 10 * MiB  # API Gateway's REST payload limit
MAX_BLOB_BODY = 100 * MiB  # ComfyUI's default upload limit
MAX_DISCARD = 1024 * MiB  # a refused body up to this size is read and dropped so that the client reads the 413
READ_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 128
LISTEN_BACKLOG = 512
CHUNK = 64 * 1024
BLOB_PREFIX = "/v1/blobs/"
WS_PATHS = frozenset({"/ws", "/api/ws"})

Authenticate = Callable[[Mapping[str, str]], str | None]
"""Request headers (names lower-cased) → the tenant, or ``None`` when the request is not authorised."""


class Resolver(Protocol):
    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...


SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("Connection", "close")]
CLOSE_HEADERS = [("Content-Type", "application/json"), ("Connection", "close")]


def _retry_headers() -> list[tuple[str, str]]:
    return [("Content-Type", "application/json"), ("Retry-After", "1")]


def error_body(type_: str, message: str) -> bytes:
    """The service's error shape (ComfyUI's), for the few answers the server gives itself."""
    error = {"type": type_, "message": message, "details": "", "extra_info": {}}
    return json.dumps({"error": error, "node_errors": {}}).encode()


@dataclass(frozen=True)
class Mount:
    """What the server serves; mounted after binding, since the blob URLs need the bound port."""

    app: Resolver
    blobs: LocalBlobStore
    hub: WebsocketHub
    authenticate: Authenticate


class ListenError(ComfyServeError):
    """The server cannot bind its address (the port is taken, or the address is not this machine's)."""


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        *,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        events_poll_s: float = sse.POLL_S,
    ) -> None:
        try:
            super().__init__(address, _Handler)
        except OSError as exc:
            raise ListenError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from None
        self.routes: Mount | None = None
        self.resolve_lock = threading.Lock()
        self.read_timeout_s = read_timeout_s
        self.slots = threading.BoundedSemaphore(max_connections)
        self.events_poll_s = events_poll_s

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is a line in the log, not a traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.info("connection from %s ended: %s", client_address[0], error)
            return
        log.exception("the request from %s failed", client_address[0])

    def mount(self, routes: Mount) -> None:
        self.routes = routes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class BodyRefused(Exception):
    """The request body cannot be taken; the handler answers ``status``, reads and drops the rest of the body
    with ``drain`` (so that a client still sending it reads the answer) and closes the connection."""

    def __init__(self, status: int, type_: str, message: str, drain: Callable[[], object] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.drain = drain


def _limit_for(path: str) -> int:
    return MAX_BLOB_BODY if urlsplit(path).path.startswith(BLOB_PREFIX) else MAX_API_BODY


def _too_large(limit: int, drain: Callable[[], object] | None = None) -> BodyRefused:
    return BodyRefused(413, "payload_too_large", f"the body is larger than {limit} bytes", drain)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A buffered writer sends each response's headers and body in one segment (flushed after every request,
    # and after every websocket frame), and no Nagle delay: no 40 ms delayed-ACK stalls on keep-alive.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: LocalServer
    _slot = False

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.read_timeout_s)

    def handle(self) -> None:
        self._slot = self.server.slots.acquire(blocking=False)
        try:
            super().handle()
        finally:
            self._release_slot()

    def _release_slot(self) -> None:
        if self._slot:
            self._slot = False
            self.server.slots.release()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line, unknown method …) as JSON."""
        if code == 501:  # no do_<METHOD>: a method no route has
            code, type_, message = 405, "method_not_allowed", f"method {self.command} is not supported"
            with contextlib.suppress(BodyRefused, OSError):
                self._read_body(MAX_API_BODY)
        else:
            type_ = "bad_request" if code < 500 else "service_unavailable"
        self.close_connection = True
        self._reply(code, error_body(type_, message or ""), CLOSE_HEADERS)

    def handle_expect_100(self) -> bool:
        """Refuse an over-limit body before the client sends it."""
        try:
            length = self._content_length()
        except BodyRefused as refused:
            self._refuse(refused.status, refused.type, refused.message)
            return False
        limit = _limit_for(self.path)
        if length > limit:
            self._refuse(413, "payload_too_large", f"the body is larger than {limit} bytes")
            return False
        return super().handle_expect_100()

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = split.path or "/"
        routes = self.server.routes
        if path in WS_PATHS and self.headers.get("Upgrade") and routes is not None and self._slot:
            self._release_slot()  # a websocket lives long: it does not hold a request slot
            self._websocket(routes, split.query)
            return
        try:
            body = self._read_body(_limit_for(path))
        except BodyRefused as refused:
            self._refuse(refused.status, refused.type, refused.message, refused.drain)
            return
        except TimeoutError:
            self._refuse(408, "request_timeout", f"the body did not arrive within {self.server.read_timeout_s:g} s")
            return
        if routes is None:
            self._reply(503, error_body("service_unavailable", "the server is starting"), _retry_headers())
        elif not self._slot:
            self.close_connection = True
            self._reply(503, error_body("service_unavailable", "the server is busy, retry"), _retry_headers())
        elif path.startswith(BLOB_PREFIX):
            self._blob(routes.blobs, unquote(path[len(BLOB_PREFIX) :]), split.query, body)
        else:
            self._api(routes.app, path, split.query, body)

    def _content_length(self) -> int:
        text = self.headers.get("Content-Length")
        try:
            length = int(text or 0)
        except ValueError:
            length = -1
        if length < 0:
            raise BodyRefused(400, "bad_request", "malformed Content-Length")
        return length

    def _read_body(self, limit: int) -> bytes:
        """The request body (Content-Length or chunked); :class:`BodyRefused` for a body over ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self._content_length()
        if length > limit:
            raise _too_large(limit, lambda: self._discard(length))
        return self.rfile.read(length) if length else b""

    def _read_chunked(self, limit: int, keep: bool = True) -> bytes:
        """The chunks' data up to ``limit`` bytes (read and dropped when not ``keep``)."""
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyRefused(400, "bad_request", "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _too_large(limit, functools.partial(self._drain_chunks, size) if keep else None)
            if keep:
                parts.append(self.rfile.read(size))
            else:
                self._discard(size)
            self.rfile.readline(3)

    def _drain_chunks(self, current: int) -> None:
        self._discard(current)
        self.rfile.readline(3)
        self._read_chunked(MAX_DISCARD, keep=False)

    def _discard(self, length: int) -> None:
        if length > MAX_DISCARD:
            return
        while length > 0:
            data = self.rfile.read(min(length, CHUNK))
            if not data:
                return
            length -= len(data)

    def _refuse(self, status: int, type_: str, message: str, drain: Callable[[], object] | None = None) -> None:
        """Answer at once, drop what is left of the body (``drain``), then close."""
        self.close_connection = True
        self._reply(status, error_body(type_, message), CLOSE_HEADERS)
        with contextlib.suppress(OSError, ValueError, BodyRefused):
            self.wfile.flush()
            if drain is not None:
                drain()
            self.connection.shutdown(socket.SHUT_WR)

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        names = set()
        for name, value in headers or [("Content-Type", "application/json")]:
            names.add(name.lower())
            self.send_header(name, value)
        if "content-length" not in names:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _resolve(
        self, app: Resolver, path: str, query: str, body: bytes, *, answer: bool = True
    ) -> HttpResponse | None:
        """The route table's answer; ``None`` when it raised (after answering a 500, with ``answer``)."""
        event = build_event(self.command, path, query, list(self.headers.items()), body, self.client_address[0])
        try:
            with self.server.resolve_lock:
                raw = app.resolve(event, LambdaContextStub())
            return parse_response(raw)
        except Exception:
            log.exception("the route table raised on %s %s", self.command, path)
            if answer:
                self._reply(500, error_body("internal_error", "the server failed to handle the request"))
            return None

    def _api(self, app: Resolver, path: str, query: str, body: bytes) -> None:
        response = self._resolve(app, path, query, body)
        if response is None:
            return
        live = response.status == 200 and self.command == "GET" and sse.EVENTS_PATH.match(path) is not None
        if live and not sse.is_terminal(response.body):
            self._stream_events(app, path, query, response.body)
            return
        self._reply(response.status, response.body, response.headers)

    def _stream_events(self, app: Resolver, path: str, query: str, first: bytes) -> None:
        """Keep a job's event stream open until it finishes (see :mod:`comfyserve.localstack.sse`)."""
        self._release_slot()  # a stream lives long: it does not hold a request slot
        self.close_connection = True
        self.send_response(200)
        for name, value in SSE_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        sent = sse.FrameFilter()
        poll_s, deadline = self.server.events_poll_s, time.monotonic() + sse.MAX_S
        body: bytes | None = first
        quiet_since = time.monotonic()
        try:
            while body is not None:
                fresh = sent.new(body)
                if fresh or time.monotonic() - quiet_since > sse.KEEPALIVE_S:
                    self.wfile.write(fresh or sse.KEEPALIVE)
                    self.wfile.flush()
                    quiet_since = time.monotonic()
                if sse.is_terminal(body) or time.monotonic() > deadline:
                    return
                time.sleep(poll_s)
                response = self._resolve(app, path, query, b"", answer=False)
                body = response.body if response is not None and response.status == 200 else None
        except OSError:
            log.debug("event stream of %s closed by the client", path)

    def _blob(self, blobs: LocalBlobStore, key: str, query: str, body: bytes) -> None:
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        method = "GET" if self.command == "HEAD" else self.command
        if method not in ("GET", "PUT"):
            self._reply(405, error_body("method_not_allowed", "blob URLs accept GET, HEAD and PUT"))
            return
        content_type = self.headers.get("Content-Type", "") if method == "PUT" else ""
        try:
            validate_key(key)
            blobs.signer.verify(method, key, params.get("expires"), params.get("sig"), content_type)
            if method == "PUT":
                blobs.put(key, body, content_type or "application/octet-stream")
                self._reply(200, b"", [("Content-Length", "0")])
                return
            info = blobs.head(key)
            if info is None:
                raise BlobNotFound(key)
            data = blobs.get(key) if self.command == "GET" else b""
            headers = [
                ("Content-Type", info.content_type),
                ("Content-Length", str(info.size)),
                ("ETag", info.etag),
            ]
            self._reply(200, data, headers)
        except PresignedUrlInvalid as exc:
            self._reply(403, error_body("forbidden", str(exc)))
        except InvalidKey as exc:
            self._reply(400, error_body("invalid_key", str(exc)))
        except BlobNotFound as exc:
            self._reply(404, error_body("not_found", str(exc)))

    def _websocket(self, routes: Mount, query: str) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        tenant = routes.authenticate(headers)
        if tenant is None:
            self._reply(401, error_body("unauthorized", "a valid x-api-key header is required"))
            return
        try:
            accept = check_upgrade(headers)
        except HandshakeError as exc:
            self._reply(400, error_body("bad_request", str(exc)))
            return
        client_id = (parse_qs(query).get("clientId") or [""])[-1] or uuid.uuid4().hex
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.connection.settimeout(None)  # a websocket may stay quiet for as long as its client likes
        routes.hub.serve(WebSocket(self.rfile, self.wfile), tenant, client_id)
