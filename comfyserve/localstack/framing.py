"""What the edge reads of a request before its route: the framing headers, and the body within a limit.

The HTTP parser (llhttp) already refuses a malformed chunk size, a signed, listed or repeated
``Content-Length``, one sent with ``Transfer-Encoding`` and a last transfer coding other than chunked;
:func:`framing_error` refuses, in addition, what it lets through and a proxy in front of us might read another
way (a coding before ``chunked``) and an HTTP/1.1 request without ``Host`` (RFC 9112 §3.2). :func:`read_body`
keeps at most ``limit`` bytes of a body, whatever its framing, and drops what it is told not to keep: a request refused
before its route costs no memory. What it drops is read no faster than a :class:`DrainBudget` shared by every
connection allows, so that clients streaming refused bodies (no key, over the limit) cannot take the event loop's
time from the requests it serves: the sender is held back by TCP's own flow control.
"""

from __future__ import annotations

import asyncio
import time
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


class DrainBudget:
    """Bytes per second that refused bodies may be read at, all connections together (each dropped part waits
    for its turn: a virtual schedule, so a burst is spread rather than refused)."""

    def __init__(self, bytes_per_s: float) -> None:
        self._bytes_per_s = bytes_per_s
        self._free_at = 0.0

    async def take(self, size: int) -> None:
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + size / self._bytes_per_s
        if self._free_at > now:
            await asyncio.sleep(self._free_at - now)


def framing_error(headers: Headers, http_version: str) -> str | None:
    """Why the request's head is ambiguous, ``None`` when it is not (header names lower-case)."""
    if http_version == "1.1" and not any(name == b"host" for name, _ in headers):
        return "an HTTP/1.1 request needs a Host header"
    codings = [value.strip().lower() for name, value in headers if name == b"transfer-encoding"]
    if codings and codings != [b"chunked"]:
        return "a Transfer-Encoding other than 'chunked'"
    return None


def declared_length(headers: Headers) -> int | None:
    """``Content-Length`` when the request has one (after :func:`framing_error` passed)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def too_large(limit: int) -> BodyError:
    return BodyError(413, "payload_too_large", f"the body is larger than {limit} bytes")


async def read_body(receive: Receive, limit: int, timeout_s: float, drain: DrainBudget, *, keep: bool = True) -> bytes:
    """The body, up to ``limit`` bytes (dropped when not ``keep``); each part must come within ``timeout_s``.

    A body over the limit is read to its end (and dropped) before :class:`BodyError` 413, so that a client that
    sends the whole body before reading still reads the answer; the time for that is bounded by the timeout
    per part and by ``drain``, its memory by one part."""
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
        else:
            await drain.take(len(chunk))
    if size > limit:
        raise too_large(limit)
    return b"".join(parts)
