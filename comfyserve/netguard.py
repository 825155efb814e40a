"""SSRF guard for URLs the service fetches or calls (webhooks, URL inputs), and the one way to open them.

A URL passes when its scheme is http(s), it names a host, and every address the host resolves to is a public
one. Private, loopback, link-local (including 169.254.169.254, the cloud metadata endpoint), multicast,
reserved, unspecified and shared (CGNAT) addresses are refused, IPv4-mapped IPv6 included. Resolution
happens at check time, so call it right before each connection; a host that re-resolves differently
afterwards (DNS rebinding) is out of its reach.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]


class UnsafeURL(ValueError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


def resolve_host(host: str, port: int) -> list[str]:
    infos: list[tuple[Any, ...]] = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_public_url(url: str, *, allow_private: bool = False, resolve: Resolver = resolve_host) -> None:
    """Raise :class:`UnsafeURL` unless ``url`` is an http(s) URL whose host resolves only to public addresses.

    ``allow_private`` keeps the scheme and host checks but accepts any address (local stacks, tests).
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURL(url, f"malformed URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL(url, "scheme must be http or https")
    if not parts.hostname:
        raise UnsafeURL(url, "no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL(url, "credentials in URL")
    if allow_private:
        return
    try:
        addresses = resolve(parts.hostname, port)
    except OSError as exc:
        raise UnsafeURL(url, f"host does not resolve ({exc})") from None
    if not addresses:
        raise UnsafeURL(url, "host does not resolve")
    for address in addresses:
        if not is_public_address(address):
            raise UnsafeURL(url, f"{parts.hostname} resolves to non-public address {address}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as its 3xx ``urllib.error.HTTPError``: following it would skip the check."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def open_public(
    url: str,
    *,
    timeout: float,
    allow_private: bool = False,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> http.client.HTTPResponse:
    """GET ``url`` (POST ``data``) once it passes :func:`check_public_url` (:class:`UnsafeURL` before any
    connection). Redirects are not followed: a 3xx raises ``urllib.error.HTTPError`` like any error status."""
    check_public_url(url, allow_private=allow_private)
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    response: http.client.HTTPResponse = _opener.open(request, timeout=timeout)
    return response
