"""Reading bodies by hand, for ComfyUI's routes: ComfyUI reads JSON whatever the Content-Type says, and its
clients (urllib's default ``application/x-www-form-urlencoded`` included) rely on that. Uploads are
``multipart/form-data``, which API Gateway hands over base64-encoded."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from comfyserve.api.errors import invalid_request
from comfyserve.api.multipart import FORM_DATA, FormField, MultipartError, is_form_data, parse_form
from comfyserve.service.errors import Invalid, UnsupportedMediaType

ModelT = TypeVar("ModelT", bound=BaseModel)


def raw_json(app: Any) -> Any:
    """The decoded JSON body, ``None`` when there is none; :class:`Invalid` when it is not JSON."""
    try:
        text = app.current_event.decoded_body
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("Request body is not valid JSON", type_="invalid_json", details=str(exc)) from None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Invalid("Request body is not valid JSON", type_="invalid_json", details=str(exc)) from None


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
