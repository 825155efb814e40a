"""Checks every request passes before its route runs: who is calling (401/403), how big the body is (413)
and, for routes with a typed JSON body, its content type (415). Nothing is recorded before they pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Route
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from comfyserve.api.auth import Authenticator
from comfyserve.service.errors import TooLarge, UnsupportedMediaType
from comfyserve.service.settings import ServiceSettings

PUBLIC_ROUTES = frozenset({"/v1/health"})
TENANT = "tenant"


def body_size(event: BaseProxyEvent) -> int:
    body = event.body or ""
    if event.is_base64_encoded:
        return len(body) * 3 // 4 - body[-2:].count("=")
    return len(body.encode("utf-8"))


def is_json(content_type: str | None) -> bool:
    """No content type, ``application/json`` or any ``+json`` type (parameters such as charset allowed)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type in ("", "application/json") or media_type.endswith("+json")


def tenant_of(app: Any) -> str:
    """The tenant the gate authenticated for the current request."""
    return str(app.context[TENANT])


class RequestGate:
    def __init__(self, auth: Authenticator, settings: ServiceSettings) -> None:
        self._auth = auth
        self._max_body = settings.max_body_bytes

    def check(self, app: Any) -> None:
        """Raise the first failing check's error, else remember the caller's tenant on ``app.context``."""
        route: Route | None = app.context.get("_route")
        event: BaseProxyEvent = app.current_event
        if route is None or route.path not in PUBLIC_ROUTES:
            app.append_context(**{TENANT: self._auth.authenticate(event)})
        size = body_size(event)
        if size > self._max_body:
            raise TooLarge("Request body too large", details=f"{size} bytes, the limit is {self._max_body} bytes")
        content_type = event.headers.get("content-type")
        if route is not None and route.dependant.body_params and not is_json(content_type):
            raise UnsupportedMediaType("Unsupported content type", details=f"send application/json, not {content_type}")

    def middleware(self) -> Callable[[Any, NextMiddleware], Response]:
        """The gate as a Powertools middleware: a function, since Powertools caches what it learns of a
        middleware's signature on the callable, which a bound method cannot hold (it would inspect it again,
        type hints and all, on every request)."""

        def gate(app: Any, next_middleware: NextMiddleware) -> Response:
            self.check(app)
            return next_middleware(app)

        return gate
