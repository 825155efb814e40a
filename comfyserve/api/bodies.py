"""Reading bodies by hand, for ComfyUI's routes: ComfyUI reads JSON whatever the Content-Type says, and its
clients (urllib's default ``application/x-www-form-urlencoded`` included) rely on that. Uploads are
``multipart/form-data``, which API Gateway hands over base64-encoded."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from comfyserve.api.errors import NOT_UTF8, invalid_request, not_json
from comfyserve.api.multipart import FORM_DATA, FormField, MultipartError, is_form_data, parse_form
from comfyserve.service.errors import Invalid, UnsupportedMediaType

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_JSON_DEPTH = 128
"""Nesting levels a JSON body may have (a workflow needs about 6, a UI workflow in extra_pnginfo about 12)."""
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # only a body with such an escape is walked
_SURROGATE = re.compile("[\ud800-\udfff]")


def _depth_exceeds(document: Any, limit: int) -> bool:
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _lone_surrogate(document: Any) -> str | None:
    """The first string (value or key) holding a lone UTF-16 surrogate, ``None`` if there is none."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return value
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return None


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` that refuses, with a :class:`json.JSONDecodeError` (what Powertools and :func:`raw_json`
    turn into a 400), bodies nested deeper than :data:`MAX_JSON_DEPTH` (never a :class:`RecursionError`) and
    strings holding a lone surrogate (a ``\\ud800`` escape without its pair: no text encoding can store it, so
    nothing after the edge could)."""
    source = text if isinstance(text, str) else text.decode("utf-8", "replace")
    too_deep = json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", source[:64], 0)
    try:
        document = json.loads(source)
    except RecursionError:
        raise too_deep from None
    if _depth_exceeds(document, MAX_JSON_DEPTH):
        raise too_deep
    if _SURROGATE_ESCAPE.search(source) and (found := _lone_surrogate(document)) is not None:
        shown = found.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:64]
        raise json.JSONDecodeError(f'a lone UTF-16 surrogate in the string "{shown}"', source[:64], 0)
    return document


def raw_json(app: Any) -> Any:
    """The decoded JSON body, ``None`` when there is none; :class:`Invalid` when it is not JSON."""
    try:
        return app.current_event.json_body
    except UnicodeDecodeError:
        raise not_json(NOT_UTF8) from None
    except json.JSONDecodeError as exc:
        raise not_json(exc.msg) from None
    except ValueError as exc:
        raise not_json(str(exc)) from None


def form_body(app: Any) -> dict[str, FormField]:
    """The fields of a ``multipart/form-data`` body; :class:`UnsupportedMediaType` for another content type,
    :class:`Invalid` for a body that does not parse."""
    event = app.current_event
    content_type = event.headers.get("content-type") or ""
    if not is_form_data(content_type):
        details = f"send {FORM_DATA}, not {content_type or 'no content type'}"
        raise UnsupportedMediaType("Unsupported content type", details=details)
    try:
        body = event.body or ""
        data = base64.b64decode(body, validate=True) if event.is_base64_encoded else body.encode("utf-8")
        return parse_form(content_type, data)
    except (binascii.Error, MultipartError) as exc:
        raise Invalid("Invalid multipart body", type_="invalid_multipart", details=str(exc)) from None


def parse(model: type[ModelT], document: Any) -> ModelT:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def json_request(model: type[BaseModel]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` for a body read by hand (Powertools documents ``Body`` params only)."""
    return {
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
