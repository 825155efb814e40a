"""The local server's ASGI application: the route table through API Gateway-shaped events, presigned blob URLs,
ComfyUI's websocket.

* every HTTP request that is not a blob URL becomes a REST proxy event for the route table (the same one Lambda
  serves), resolved with a resolver of its own (:mod:`.resolver_pool`) on one of
  :attr:`EdgeLimits.resolve_threads` threads, the others waiting in turn (route work is CPU under the GIL: more
  threads only share it, every request finishing later and the loop thread starved); health has a thread of
  its own, so a slow or locked route never holds it up;
* ``GET|PUT /v1/blobs/{key}?expires&sig`` serves the local blob store's presigned URLs (S3's role);
* ``/ws?clientId=`` (also ``/api/ws``) is ComfyUI's websocket (:mod:`.ws_hub`).

Before a request reaches its route the edge refuses, each with a JSON answer in the service's error shape and
the connection closed: ambiguous framing (400), a method no route has (405), more requests in flight than
:attr:`EdgeLimits.max_in_flight` (503 with ``Retry-After``: a request is in flight from its headers to its
answer, an idle keep-alive connection holds nothing), a body over the limit (413, before it is sent when the
client asks ``Expect: 100-continue``), a body that stops arriving (408), and a request without a valid key
(the route table's own 401/403, its body dropped unread).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from comfyserve.adapters.local.blobs import LocalBlobStore, PresignedUrlInvalid
from comfyserve.localstack import sse
from comfyserve.localstack.apigw import HttpResponse, LambdaContextStub, build_event, parse_response
from comfyserve.localstack.framing import (
    BodyError,
    Disconnected,
    DrainBudget,
    declared_length,
    framing_error,
    read_body,
    too_large,
)
from comfyserve.localstack.resolver_pool import ResolverPool
from comfyserve.localstack.ws_hub import AsgiSocket, WebsocketHub
from comfyserve.ports import BlobNotFound, InvalidKey, validate_key

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_API_BODY = 10 * MiB  # API Gateway's REST payload limit
MAX_BLOB_BODY = 100 * MiB  # ComfyUI's default upload limit
BLOB_PREFIX = "/v1/blobs/"
WS_PATHS = frozenset({"/ws", "/api/ws"})
PUBLIC_PATHS = frozenset({"/v1/health", "/api/v1/health"})  # the routes the gate lets in without a key
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
MAX_HEADERS = 100

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Authenticate = Callable[[Mapping[str, str]], str | None]
"""Request headers (names lower-cased) → the tenant, or ``None`` when the request is not authorised."""


@dataclass(frozen=True)
class EdgeLimits:
    read_timeout_s: float = 30.0  # for the headers, and for each part of a body
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_in_flight: int = 128  # requests between their headers and their answer
    resolve_threads: int = 2  # route-table threads (health has one more of its own)
    max_websockets: int = 512
    ws_max_message: int = 1 * MiB
    ws_max_fragments: int = 64  # frames one websocket message may be split into
    drain_bytes_per_s: int = 32 * MiB  # refused bodies are read (and dropped) at most this fast, all together
    events_poll_s: float = sse.POLL_S


@dataclass(frozen=True)
class Mount:
    """What the server serves; mounted after binding, since the blob URLs need the bound port."""

    build_app: Callable[[], Any]  # a new route table (one per concurrent request, see ResolverPool)
    blobs: LocalBlobStore
    hub: WebsocketHub
    authenticate: Authenticate


def error_body(type_: str, message: str) -> bytes:
    """The service's error shape (ComfyUI's), for the answers the edge gives itself."""
    error = {"type": type_, "message": message, "details": "", "extra_info": {}}
    return json.dumps({"error": error, "node_errors": {}}).encode()


JSON = (b"content-type", b"application/json")
CLOSE = (b"connection", b"close")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), CLOSE]


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if not any(name == b"content-length" for name, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refuse(send: Send, status: int, type_: str, message: str, *, retry: bool = False) -> None:
    """An answer of the edge's own, after which the connection closes."""
    headers = [JSON, CLOSE, *([(b"retry-after", b"1")] if retry else [])]
    await respond(send, status, error_body(type_, message), headers)


def _text_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]


def _answer_headers(response: HttpResponse) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]


class EdgeApp:
    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self.mount: Mount | None = None
        self.pool: ResolverPool | None = None
        self.in_flight = 0
        self.websockets = 0
        self._drain = DrainBudget(limits.drain_bytes_per_s)
        self._executor = ThreadPoolExecutor(limits.resolve_threads, thread_name_prefix="comfyserve-resolve")
        self._public = ThreadPoolExecutor(1, thread_name_prefix="comfyserve-health")

    def mount_routes(self, mount: Mount) -> None:
        self.pool = ResolverPool(mount.build_app)
        self.mount = mount

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._public.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        if len(headers) > MAX_HEADERS:
            await refuse(send, 431, "bad_request", f"more than {MAX_HEADERS} headers")
            return
        if (problem := framing_error(headers, scope["http_version"])) is not None:
            await refuse(send, 400, "bad_request", f"ambiguous request: {problem}")
            return
        if scope["method"] not in METHODS:
            await refuse(send, 405, "method_not_allowed", f"method {scope['method']} is not supported")
            return
        if self.mount is None or self.pool is None:
            await refuse(send, 503, "service_unavailable", "the server is starting", retry=True)
            return
        if self.in_flight >= self.limits.max_in_flight:
            await refuse(send, 503, "service_unavailable", "the server is busy, retry", retry=True)
            return
        self.in_flight += 1
        try:
            await self._request(scope, receive, send, self.mount, self.pool)
        finally:
            self.in_flight -= 1

    async def _request(self, scope: Scope, receive: Receive, send: Send, mount: Mount, pool: ResolverPool) -> None:
        path: str = scope["path"] or "/"
        limit = MAX_BLOB_BODY if path.startswith(BLOB_PREFIX) else MAX_API_BODY
        text_headers = _text_headers(scope)
        length = declared_length(scope["headers"])
        if length is not None and length > limit:
            await self._refuse_announced(scope, receive, send, limit)
            return
        authorised = path.startswith(BLOB_PREFIX) or path in PUBLIC_PATHS
        if not authorised:
            authorised = mount.authenticate({name.lower(): value for name, value in text_headers}) is not None
        try:
            body = await read_body(receive, limit, self.limits.read_timeout_s, self._drain, keep=authorised)
        except BodyError as error:
            await refuse(send, error.status, error.type, error.message)
            return
        except Disconnected:
            return
        query = scope["query_string"].decode("latin-1")
        if path.startswith(BLOB_PREFIX):
            await self._blob(scope, send, mount.blobs, path[len(BLOB_PREFIX) :], query, body)
            return
        # Unauthorised, the route table answers its own 401/403 without the body (it was never kept).
        event = build_event(scope["method"], path, query, text_headers, body, (scope.get("client") or ("",))[0])
        response = await self._resolve(pool, event, self._public if path in PUBLIC_PATHS else self._executor)
        if response is None:
            await refuse(send, 500, "internal_error", "the server failed to handle the request")
            return
        live = response.status == 200 and scope["method"] == "GET" and sse.EVENTS_PATH.match(path) is not None
        if live and not sse.is_terminal(response.body):
            self.in_flight -= 1  # a stream lives long: it does not count as a request in flight
            try:
                await self._stream_events(send, pool, event, response.body)
            finally:
                self.in_flight += 1
            return
        await respond(send, response.status, response.body, _answer_headers(response))

    async def _refuse_announced(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """413 for a body announced over the limit, at once; then its bytes are read and dropped (unless the
        client waits for ``100 Continue``, which never comes) so that a client sending it still reads the 413."""
        body = error_body("payload_too_large", too_large(limit).message)
        headers = [JSON, CLOSE, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        if (b"expect", b"100-continue") in scope["headers"]:
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.body", "body": body, "more_body": True})
        with contextlib.suppress(BodyError, Disconnected):
            await read_body(receive, 0, self.limits.read_timeout_s, self._drain, keep=False)
        await send({"type": "http.response.body", "body": b""})

    async def _resolve(
        self, pool: ResolverPool, event: dict[str, Any], executor: ThreadPoolExecutor
    ) -> HttpResponse | None:
        """The route table's answer, resolved on ``executor``; ``None`` when it raised (logged)."""
        loop = asyncio.get_running_loop()
        try:
            raw = await loop.run_in_executor(executor, pool.resolve, event, LambdaContextStub())
            return parse_response(raw)
        except Exception:
            log.exception("the route table raised on %s %s", event["httpMethod"], event["path"])
            return None

    async def _stream_events(self, send: Send, pool: ResolverPool, event: dict[str, Any], first: bytes) -> None:
        """Keep a job's event stream open until it finishes (see :mod:`comfyserve.localstack.sse`)."""
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        sent = sse.FrameFilter()
        deadline = time.monotonic() + sse.MAX_S
        body: bytes | None = first
        quiet_since = time.monotonic()
        while body is not None:
            fresh = sent.new(body)
            if fresh or time.monotonic() - quiet_since > sse.KEEPALIVE_S:
                await send({"type": "http.response.body", "body": fresh or sse.KEEPALIVE, "more_body": True})
                quiet_since = time.monotonic()
            if sse.is_terminal(body) or time.monotonic() > deadline:
                break
            await asyncio.sleep(self.limits.events_poll_s)
            response = await self._resolve(pool, {**event, "body": None}, self._executor)
            body = response.body if response is not None and response.status == 200 else None
        await send({"type": "http.response.body", "body": b""})

    async def _blob(self, scope: Scope, send: Send, blobs: LocalBlobStore, key: str, query: str, body: bytes) -> None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        if method not in ("GET", "PUT"):
            await refuse(send, 405, "method_not_allowed", "blob URLs accept GET, HEAD and PUT")
            return
        params = {name: values[-1] for name, values in parse_qs(query).items()}
        content_type = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"content-type"), "")
        content_type = content_type if method == "PUT" else ""
        loop = asyncio.get_running_loop()
        try:
            validate_key(key)
            blobs.signer.verify(method, key, params.get("expires"), params.get("sig"), content_type)
            if method == "PUT":
                put = blobs.put
                await loop.run_in_executor(self._executor, put, key, body, content_type or "application/octet-stream")
                await respond(send, 200, b"", [])
                return
            info = blobs.head(key)
            if info is None:
                raise BlobNotFound(key)
            data = await loop.run_in_executor(self._executor, blobs.get, key) if scope["method"] == "GET" else b""
            headers = [
                (b"content-type", info.content_type.encode("latin-1")),
                (b"content-length", str(info.size).encode()),
                (b"etag", info.etag.encode("latin-1")),
            ]
            await respond(send, 200, data, headers)
        except PresignedUrlInvalid as exc:
            await respond(send, 403, error_body("forbidden", str(exc)), [JSON])
        except InvalidKey as exc:
            await respond(send, 400, error_body("invalid_key", str(exc)), [JSON])
        except BlobNotFound as exc:
            await respond(send, 404, error_body("not_found", str(exc)), [JSON])

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ComfyUI's websocket; the handshake itself (version, key) is the websocket library's."""
        mount = self.mount
        if mount is None:
            await self._deny(send, 503, "service_unavailable", "the server is starting")
            return
        if scope["path"] not in WS_PATHS:
            await self._deny(send, 404, "not_found", f"no websocket at {scope['path']}")
            return
        headers = {name.lower(): value for name, value in _text_headers(scope)}
        tenant = mount.authenticate(headers)
        if tenant is None:
            await self._deny(send, 401, "unauthorized", "a valid x-api-key header is required")
            return
        if self.websockets >= self.limits.max_websockets:
            await self._deny(send, 503, "service_unavailable", "too many open websockets, retry")
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        client_id = (query.get("clientId") or [""])[-1] or uuid.uuid4().hex
        self.websockets += 1  # before the first await: two handshakes cannot both take the last place
        try:
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await mount.hub.serve(AsgiSocket(receive, send), tenant, client_id)
        finally:
            self.websockets -= 1

    @staticmethod
    async def _deny(send: Send, status: int, type_: str, message: str) -> None:
        """Refuse a websocket handshake with an HTTP answer (the ASGI websocket denial response extension)."""
        body = error_body(type_, message)
        headers = [JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
