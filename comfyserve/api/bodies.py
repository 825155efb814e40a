"""Reading bodies by hand, for ComfyUI's routes: ComfyUI reads JSON whatever the Content-Type says, and its
clients (urllib's default ``application/x-www-form-urlencoded`` included) rely on that."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from comfyserve.api.errors import invalid_request
from comfyserve.service.errors import Invalid

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
