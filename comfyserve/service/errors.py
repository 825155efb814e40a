"""Domain errors of the job service. Each knows its HTTP status and renders ComfyUI's error shape once.

Every error body is ``{"error": {"type", "message", "details", "extra_info"}, "node_errors": {...}}`` — the
shape ComfyUI answers an invalid prompt with (reference §1.2), so ComfyUI clients read all of our errors.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from comfyserve.engine.validation import ValidationResult

MAX_ERROR_TEXT = 1024
# An absolute path of two or more segments (POSIX, or Windows with a drive), not inside a URL or a relative path.
_HOST_PATH = re.compile(r"(?<![\w.:/\\])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"]+){2,}")


def bounded(value: Any) -> Any:
    """``value`` with every string longer than :data:`MAX_ERROR_TEXT` cut short (marked with '…')."""
    if isinstance(value, str):
        return value if len(value) <= MAX_ERROR_TEXT else value[:MAX_ERROR_TEXT] + "…"
    if isinstance(value, dict):
        return {key: bounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [bounded(item) for item in value]
    return value


def public_text(text: str) -> str:
    """A message fit for a client: each absolute host path cut to its last component (a worker's paths say
    nothing to a client and tell too much), at most :data:`MAX_ERROR_TEXT` characters."""
    return str(bounded(_HOST_PATH.sub(lambda match: re.split(r"[\\/]", match.group())[-1], text)))


class ServiceError(Exception):
    status: ClassVar[int] = 400
    default_type: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        type_: str | None = None,
        details: str = "",
        extra_info: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message if not details else f"{message}: {details}")
        self.message = message
        self.type = type_ or self.default_type
        self.details = details
        self.extra_info = extra_info or {}
        self.node_errors = node_errors or {}

    def body(self) -> dict[str, Any]:
        error = {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "extra_info": self.extra_info,
        }
        return {"error": error, "node_errors": self.node_errors}

    def headers(self) -> dict[str, str]:
        return {}


class Invalid(ServiceError):
    """400: the request or its workflow is invalid (a workflow's errors carry ComfyUI's ``node_errors``)."""

    @classmethod
    def from_validation(cls, result: ValidationResult) -> Invalid:
        """The result's error and node errors, every string in them cut to :data:`MAX_ERROR_TEXT` characters
        (a workflow's values are echoed back, and a value may be megabytes)."""
        error = bounded(result.error or {})
        return cls(
            str(error.get("message", "Prompt outputs failed validation")),
            type_=str(error.get("type", "prompt_outputs_failed_validation")),
            details=str(error.get("details", "")),
            extra_info=dict(error.get("extra_info") or {}),
            node_errors=bounded(result.node_errors),
        )


class Unauthorized(ServiceError):
    status = 401
    default_type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="comfyserve", Basic realm="comfyserve"'}


class Forbidden(ServiceError):
    status = 403
    default_type = "forbidden"


class NotFound(ServiceError):
    status = 404
    default_type = "not_found"


class MethodNotAllowed(ServiceError):
    """405: the path exists, but not for this method; ``allow`` lists the methods it has."""

    status = 405
    default_type = "method_not_allowed"

    def __init__(self, message: str, *, allow: list[str], details: str = "") -> None:
        super().__init__(message, details=details, extra_info={"allow": allow})
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class Conflict(ServiceError):
    status = 409
    default_type = "conflict"


class TooLarge(ServiceError):
    status = 413
    default_type = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    default_type = "unsupported_media_type"


class Busy(ServiceError):
    """429: the backlog is over its limit; the client should retry after ``retry_after`` seconds."""

    status = 429
    default_type = "backlog_full"

    def __init__(self, message: str, *, retry_after: int, details: str = "") -> None:
        super().__init__(message, details=details, extra_info={"retry_after": retry_after})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(ServiceError):
    """503: a dependency (queue, store) failed; nothing was accepted and the request may be retried."""

    status = 503
    default_type = "service_unavailable"
    retry_after_s: ClassVar[int] = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Starting(Unavailable):
    """503: the fleet's catalog is not published yet (its ComfyUI is starting), and the workflow names what the
    stand-in catalog does not have; nothing was accepted and the request may be retried."""

    default_type = "starting"
    retry_after_s = 5
