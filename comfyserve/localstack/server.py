"""The local HTTP server: the route table through API Gateway-shaped events, presigned blob URLs, websocket.

* every request that is not one of the two below becomes a REST proxy event for ``app.resolve`` (the same
  route table Lambda serves); Powertools keeps the current event on a class attribute, so resolution is
  serialised by a lock;
* ``GET|PUT /v1/blobs/{key}?expires&sig`` serves the local blob store's presigned URLs (S3's role);
* ``GET /ws?clientId=`` (also ``/api/ws``) upgrades to ComfyUI's websocket.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from comfyserve.adapters.local.blobs import LocalBlobStore, PresignedUrlInvalid
from comfyserve.localstack.apigw import LambdaContextStub, build_event, parse_response
from comfyserve.localstack.websocket import HandshakeError, WebSocket, check_upgrade
from comfyserve.localstack.ws_hub import WebsocketHub
from comfyserve.ports import BlobNotFound, InvalidKey, validate_key

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_API_BODY = 10 * MiB  # API Gateway's REST payload limit
MAX_BLOB_BODY = 100 * MiB  # ComfyUI's default upload limit
BLOB_PREFIX = "/v1/blobs/"
WS_PATHS = frozenset({"/ws", "/api/ws"})

Authenticate = Callable[[Mapping[str, str]], str | None]
"""Request headers (names lower-cased) → the tenant, or ``None`` when the request is not authorised."""


class Resolver(Protocol):
    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...


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


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.routes: Mount | None = None
        self.resolve_lock = threading.Lock()

    def mount(self, routes: Mount) -> None:
        self.routes = routes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A buffered writer sends each response's headers and body in one segment (flushed after every request,
    # and after every websocket frame), and no Nagle delay: no 40 ms delayed-ACK stalls on keep-alive.
    wbufsize = -1
    disable_nagle_algorithm = True
    server: LocalServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _dispatch(self) -> None:
        routes = self.server.routes
        if routes is None:
            self._reply(503, error_body("service_unavailable", "the server is starting"))
            return
        split = urlsplit(self.path)
        path = split.path or "/"
        if path in WS_PATHS and self.headers.get("Upgrade"):
            self._websocket(routes, split.query)
            return
        limit = MAX_BLOB_BODY if path.startswith(BLOB_PREFIX) else MAX_API_BODY
        body = self._read_body(limit)
        if body is None:
            return
        if path.startswith(BLOB_PREFIX):
            self._blob(routes.blobs, unquote(path[len(BLOB_PREFIX) :]), split.query, body)
        else:
            self._api(routes.app, path, split.query, body)

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or ``None`` after answering a request whose body cannot be read."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._refuse(411, "length_required", "send a Content-Length (chunked bodies are not read)")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(400, "bad_request", "malformed Content-Length")
            return None
        if length > limit:
            self._refuse(413, "payload_too_large", f"the body is larger than {limit} bytes")
            return None
        return self.rfile.read(length) if length else b""

    def _refuse(self, status: int, type_: str, message: str) -> None:
        """Answer and close: the unread body makes the connection unusable for a next request."""
        self._reply(status, error_body(type_, message), [("Content-Type", "application/json"), ("Connection", "close")])

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

    def _api(self, app: Resolver, path: str, query: str, body: bytes) -> None:
        event = build_event(self.command, path, query, list(self.headers.items()), body, self.client_address[0])
        try:
            with self.server.resolve_lock:
                raw = app.resolve(event, LambdaContextStub())
            response = parse_response(raw)
        except Exception:
            log.exception("the route table raised on %s %s", self.command, path)
            self._reply(500, error_body("internal_error", "the server failed to handle the request"))
            return
        self._reply(response.status, response.body, response.headers)

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
        routes.hub.serve(WebSocket(self.rfile, self.wfile), tenant, client_id)
