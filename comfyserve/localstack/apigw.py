"""The local server's stand-in for API Gateway: HTTP requests in, REST proxy (v1) events out, and back.

The same route table then serves both: Lambda gets these events from API Gateway, the local server builds
them itself (``resource`` is the catch-all ``/{proxy+}``, as a greedy proxy integration sends).
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

STAGE = "local"
TEXT_TYPES = ("text/", "application/json", "application/x-www-form-urlencoded", "application/xml")


def new_request_id() -> str:
    """A request's id, as random as a UUID's 122 bits but with no system call (``uuid4`` reads the OS's random
    source, and the event loop building an event would give up the GIL for it)."""
    return f"{random.getrandbits(128):032x}"


@dataclass
class LambdaContextStub:
    """What the resolver and Powertools utilities read from a Lambda context."""

    aws_request_id: str = field(default_factory=new_request_id)
    function_name: str = "comfyserve-local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:comfyserve-local"
    memory_limit_in_mb: int = 1024
    log_group_name: str = "/comfyserve/local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def _is_text(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media.startswith(TEXT_TYPES) or media.endswith("+json")


def _single_and_multi(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        single[name] = value
        multi.setdefault(name, []).append(value)
    return single, multi


def build_event(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    identity: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """A REST API proxy event for one request; binary bodies are base64-encoded as API Gateway does."""
    header_map, multi_headers = _single_and_multi(headers)
    query_map, multi_query = _single_and_multi(parse_qsl(query, keep_blank_values=True))
    content_type = next((v for k, v in header_map.items() if k.lower() == "content-type"), "")
    text: str | None = None
    if body and _is_text(content_type):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    encoded = bool(body) and text is None
    request_id = new_request_id()
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": header_map,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query_map or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": path,
            "stage": STAGE,
            "requestId": request_id,
            "extendedRequestId": request_id,
            "requestTimeEpoch": int(time.time() * 1000),
            "accountId": "000000000000",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, **(identity or {})},
        },
        "body": base64.b64encode(body).decode("ascii") if encoded else (text or None),
        "isBase64Encoded": encoded,
    }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def parse_response(response: dict[str, Any]) -> HttpResponse:
    """The resolver's proxy response as status, header pairs and body bytes (base64 bodies decoded)."""
    headers: list[tuple[str, str]] = []
    multi = response.get("multiValueHeaders") or {}
    for name, values in multi.items():
        headers.extend((name, str(value)) for value in values)
    for name, value in (response.get("headers") or {}).items():
        if name not in multi:
            headers.append((name, str(value)))
    raw = response.get("body") or ""
    body = base64.b64decode(raw) if response.get("isBase64Encoded") else raw.encode("utf-8")
    return HttpResponse(int(response.get("statusCode", 200)), headers, body)
