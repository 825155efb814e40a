"""OpenAPI response entries shared by the routes."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from comfyserve.api.models import ErrorBody

JSON = content_types.APPLICATION_JSON
AUTH_ERRORS = (401, 403, 413)

ERROR_DESCRIPTIONS = {
    400: "Invalid request or workflow (ComfyUI's {error, node_errors} shape)",
    401: "Missing API key",
    403: "Unknown API key, or a key outside your uploads",
    404: "No such job (or not yours)",
    409: "Conflict: Idempotency-Key reused with another body, a taken id or upload name, or the job already finished",
    413: "Body or input over the size limit",
    415: "Unsupported content type: send application/json (multipart/form-data to upload)",
    429: "Backlog full; retry after Retry-After seconds",
    503: "A dependency failed; nothing was accepted, retry",
}


def ok(status: int, model: type[BaseModel], description: str) -> dict[int, OpenAPIResponse]:
    return {status: {"description": description, "content": {JSON: {"model": model}}}}


def empty_ok(description: str) -> dict[int, OpenAPIResponse]:
    return {200: {"description": f"{description} (empty body)"}}


def error_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI response entries for the given error statuses."""
    return {
        status: {"description": ERROR_DESCRIPTIONS[status], "content": {JSON: {"model": ErrorBody}}}
        for status in statuses
    }
