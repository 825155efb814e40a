"""OpenAPI response entries shared by the routes."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import content_types
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel

from comfyserve.api.models import ErrorBody
from comfyserve.api.models_v2 import V2ErrorEnvelope

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


V2_ERROR_DESCRIPTIONS = {
    400: "invalid_request (also invalid_cursor)",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found, or blob_not_found",
    409: "hash_mismatch; deleting a job's output",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_workflow (ComfyUI's node_errors in details), workflow_format_ui, missing_asset, "
    "metadata_invalid, idempotency_key_reuse",
    429: "queue_full; retry after Retry-After seconds",
    503: "service_unavailable; nothing was accepted, retry",
}


def v2_errors(*statuses: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI entries for Comfy API v2 errors (its {error: {code, message, details}} envelope)."""
    return {
        status: {"description": V2_ERROR_DESCRIPTIONS[status], "content": {JSON: {"model": V2ErrorEnvelope}}}
        for status in statuses
    }
