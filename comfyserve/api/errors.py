"""Turning errors into responses, once for every route: domain errors carry their status and ComfyUI-shaped
body; request validation failures become 400 (after the gate's checks, which take precedence)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from comfyserve.api.gate import RequestGate
from comfyserve.api.models import ErrorBody
from comfyserve.api.v2_errors import V2_INTERNAL, is_v2, v2_error_response
from comfyserve.service.errors import Invalid, MethodNotAllowed, NotFound, ServiceError, UnsupportedMediaType

log = logging.getLogger(__name__)

NOT_UTF8 = "the body is not UTF-8 text"


def not_json(details: str) -> Invalid:
    return Invalid("Request body is not valid JSON", type_="invalid_json", details=details)


def error_response(error: ServiceError) -> Response:
    return Response(error.status, content_types.APPLICATION_JSON, json.dumps(error.body()), headers=error.headers())


def invalid_request(errors: Sequence[Any]) -> Invalid:
    """Pydantic's (or Powertools') error list as one 400 naming each bad field."""
    for error in errors:
        if error.get("type") == "json_invalid":
            return not_json(str(error.get("ctx", {}).get("error", "")))
    found = [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in errors
    ]
    details = "; ".join(f"{'.'.join(item['loc'])}: {item['msg']}" for item in found)
    return Invalid("Invalid request", type_="invalid_request", details=details, extra_info={"errors": found})


def allowed_methods(app: APIGatewayRestResolver, path: str) -> list[str]:
    """The methods some route serves ``path`` with (Powertools keeps its route table private)."""
    routes = app._static_routes + app._dynamic_routes
    return sorted({route.method for route in routes if route.rule.match(path)})


def register_error_handlers(app: APIGatewayRestResolver, gate: RequestGate) -> None:
    def respond(error: ServiceError) -> Response:
        """The error in the route's family's shape: Comfy API v2's envelope on /api/v2, ComfyUI's elsewhere."""
        if is_v2(str(app.context.get("_path", app.current_event.path))):
            return v2_error_response(error)
        return error_response(error)

    def gated(error: ServiceError) -> Response:
        try:
            gate.check(app)
        except ServiceError as first:
            return respond(first)
        return respond(error)

    @app.exception_handler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        return respond(error)

    @app.exception_handler(RequestValidationError)
    def _request_invalid(error: RequestValidationError) -> Response:
        return gated(invalid_request(error.errors()))

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported(error: RequestUnsupportedContentType) -> Response:
        content_type = app.current_event.headers.get("content-type")
        return gated(
            UnsupportedMediaType("Unsupported content type", details=f"send application/json, not {content_type}")
        )

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(error: UnicodeDecodeError) -> Response:
        # Powertools decodes a typed route's body before the route (and the gate) runs.
        return gated(not_json(NOT_UTF8))

    @app.exception_handler(NotFoundError)
    def _no_route(error: NotFoundError) -> Response:
        event = app.current_event
        details = f"{event.http_method} {event.path}"
        allow = allowed_methods(app, str(app.context.get("_path", event.path)))
        if allow:
            return respond(MethodNotAllowed("Method not allowed", allow=allow, details=details))
        return respond(NotFound("Not found", type_="no_route", details=details))

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Powertools' body parsing can fail before the gate ran (a multipart body without a boundary …):
        # the gate's verdict comes first, as for any request.
        try:
            gate.check(app)
        except ServiceError as first:
            return respond(first)
        except Exception:
            log.exception("the request gate failed")
        log.error("unhandled error", exc_info=error)
        if is_v2(str(app.context.get("_path", app.current_event.path))):
            return Response(500, content_types.APPLICATION_JSON, json.dumps(V2_INTERNAL))
        body = ErrorBody.model_validate({"error": {"type": "internal_error", "message": "Internal error"}})
        return Response(500, content_types.APPLICATION_JSON, body.model_dump_json())
