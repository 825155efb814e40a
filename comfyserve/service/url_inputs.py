"""Fetching a URL input at submit time, so that workers never reach out (their subnets reach AWS endpoints
only): the SSRF guard before connecting, no redirect followed, a size cap and a deadline."""

from __future__ import annotations

import http.client
import time
import urllib.error
from dataclasses import dataclass

from comfyserve.netguard import open_public

CHUNK_BYTES = 64 * 1024
USER_AGENT = "comfyserve-inputs/1"


class FetchFailed(Exception):
    """The URL could not be fetched; ``reason`` says why, for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchTooLarge(FetchFailed):
    pass


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # the response's media type, parameters dropped


def fetch(url: str, *, max_bytes: int, deadline: float, allow_private: bool = False) -> Fetched:
    """GET ``url`` (``UnsafeURL`` from the guard before any connection); :class:`FetchTooLarge` past
    ``max_bytes``, :class:`FetchFailed` for an error status, a redirect, a network error or ``time.monotonic()``
    passing ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchFailed("timed out")
    try:
        with open_public(url, timeout=remaining, allow_private=allow_private, headers={"User-Agent": USER_AGENT}) as r:
            length = r.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FetchTooLarge(f"{length} bytes")
            data = _read(r, max_bytes, deadline)
            content_type = r.headers.get_content_type() if r.headers.get("Content-Type") else None
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            where = exc.headers.get("Location", "elsewhere") if exc.headers else "elsewhere"
            raise FetchFailed(f"HTTP {exc.code} redirects to {where}; redirects are not followed") from None
        raise FetchFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        cause = exc.reason
        raise FetchFailed("timed out" if isinstance(cause, TimeoutError) else str(cause)) from None
    except TimeoutError:
        raise FetchFailed("timed out") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchFailed(f"{type(exc).__name__}: {exc}") from None
    return Fetched(data, content_type)


def _read(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := response.read1(CHUNK_BYTES):  # one receive at a time: the deadline is checked between them
        size += len(chunk)
        if size > max_bytes:
            raise FetchTooLarge(f"over {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchFailed("timed out")
        chunks.append(chunk)
    return b"".join(chunks)
