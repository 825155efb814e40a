"""Errors on the Comfy API v2 routes, in that API's envelope: ``{"error": {"code", "message", "details"}}``
with its codes and statuses (an invalid workflow is a 422 ``invalid_workflow``, a full backlog a 429
``queue_full`` …), so comfy-sdk raises its typed exceptions. Every other route keeps ComfyUI's shape."""

from __future__ import annotations

import json

from aws_lambda_powertools.event_handler import Response, content_types

from comfyserve.service.errors import Busy, ServiceError

V2_PREFIX = "/v2/"
WORKFLOW_TYPES = frozenset(
    {"prompt_outputs_failed_validation", "prompt_no_outputs", "invalid_prompt", "resource_limit_exceeded"}
)
# service error type -> (status, v2 code)
BY_TYPE: dict[str, tuple[int, str]] = {
    "workflow_format_ui": (422, "workflow_format_ui"),
    "missing_asset": (422, "missing_asset"),
    "hash_mismatch": (409, "hash_mismatch"),
    "blob_not_found": (404, "blob_not_found"),
    "idempotency_key_reused": (422, "idempotency_key_reuse"),
    "metadata_invalid": (422, "metadata_invalid"),
    "invalid_cursor": (400, "invalid_cursor"),
}
V2_INTERNAL = {"error": {"code": "internal_error", "message": "Internal error", "details": {}}}
BY_STATUS = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "queue_full"}


def is_v2(path: str) -> bool:
    return path.startswith(V2_PREFIX)


def v2_status_and_code(error: ServiceError) -> tuple[int, str]:
    if error.type in BY_TYPE:
        return BY_TYPE[error.type]
    if error.type in WORKFLOW_TYPES or error.node_errors:
        return 422, "invalid_workflow"
    if isinstance(error, Busy):
        return 429, "queue_full"
    return error.status, BY_STATUS.get(error.status, error.type)


def v2_error_response(error: ServiceError) -> Response[str]:
    status, code = v2_status_and_code(error)
    message = f"{error.message}: {error.details}" if error.details else error.message
    details = {"type": error.type, **error.extra_info}
    if error.node_errors:
        details["node_errors"] = error.node_errors
    body = {"error": {"code": code, "message": message, "details": details}}
    return Response(status, content_types.APPLICATION_JSON, json.dumps(body), headers=error.headers())
