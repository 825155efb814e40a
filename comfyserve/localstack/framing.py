"""What the edge reads of a request before its route: the framing headers, and the body within a limit.

The HTTP parser (h11) already refuses a malformed chunk size, a signed or conflicting ``Content-Length`` and a
transfer coding it does not know; :func:`framing_error` refuses, in addition, what it lets through and a proxy
in front of us might read another way (``Content-Length`` with ``Transfer-Encoding``, a list of lengths; h11
folds a repeated identical ``Content-Length`` into one, as RFC 9110 §8.6 allows). :func:`read_body` keeps at
most ``limit`` bytes of a body, whatever its framing, and drops what it is told not to keep: a request refused
before its route costs no memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

MAX_DISCARD = 1 << 30
"""A refused body is read and dropped up to this size (then the answer comes at once, and the connection closes)."""

Headers = Sequence[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyError(Exception):
    """The body cannot be taken: ``status`` (408, 413) and a message for the client."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


class Disconnected(Exception):
    """The client went away before its body arrived."""


def framing_error(headers: Headers) -> str | None:
    """Why the request's framing is ambiguous, ``None`` when it is not (header names lower-case)."""
    lengths = [value for name, value in headers if name == b"content-length"]
    codings = [value for name, value in headers if name == b"transfer-encoding"]
    if lengths and codings:
        return "Content-Length and Transfer-Encoding together"
    if len(lengths) > 1 or any(b"," in value for value in lengths):
        return "more than one Content-Length"
    if lengths and not lengths[0].strip().isdigit():
        return "Content-Length is not a decimal number"
    if codings and [value.strip().lower() for value in codings] != [b"chunked"]:
        return "the only transfer coding accepted is 'chunked'"
    return None


def declared_length(headers: Headers) -> int | None:
    """``Content-Length`` when the request has one (after :func:`framing_error` passed)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def too_large(limit: int) -> BodyError:
    return BodyError(413, "payload_too_large", f"the body is larger than {limit} bytes")


async def read_body(receive: Receive, limit: int, timeout_s: float, *, keep: bool = True) -> bytes:
    """The body, up to ``limit`` bytes (dropped when not ``keep``); each part must come within ``timeout_s``.

    A body over the limit is read to its end (and dropped) before :class:`BodyError` 413, so that a client that
    sends the whole body before reading still reads the answer; the time for that is bounded by the timeout
    per part, its memory by one part."""
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        try:
            async with asyncio.timeout(timeout_s):
                message = await receive()
        except TimeoutError:
            raise BodyError(408, "request_timeout", f"the body did not arrive within {timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        more = bool(message.get("more_body"))
        size += len(chunk)
        if keep and size <= limit:
            parts.append(chunk)
        elif size > MAX_DISCARD:
            break
    if size > limit:
        raise too_large(limit)
    return b"".join(parts)
