"""Reading API-format workflows: ``{node_id: {"class_type": str, "inputs": {name: value | [node_id, slot]}}}``.

Node ids are any string. A link is a two-item list ``[node_id, output_index]``; a literal list travels as
``{"__value__": [...]}``. ``_meta`` and undeclared constant inputs (``"upload": "image"``) are tolerated.
Kept free of pydantic so that the validation path imports in milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

from comfyserve.engine.errors import WorkflowFormatError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64

Link = tuple[str, int]


def is_link(value: Any) -> bool:
    """ComfyUI's link test: a two-item list whose first item is a node id string and second a number."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int | float)
        and not isinstance(value[1], bool)
    )


def unwrap_literal(value: Any) -> Any:
    """``{"__value__": [...]}`` is how a literal list is written; anything else is returned as it is."""
    if isinstance(value, dict) and len(value) == 1 and "__value__" in value:
        return value["__value__"]
    return value


def parse_workflow_document(raw: bytes | str) -> dict[str, Any]:
    """Parse a workflow file or request body: the bare prompt, or ``{"prompt": {...}}`` as sent to ComfyUI."""
    return workflow_from_json(load_document(raw))


def load_document(raw: bytes | str) -> Any:
    """The JSON of a workflow file or request body, refused when too big, malformed or nested too deeply."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise WorkflowFormatError(f"the workflow is {len(raw):,} bytes, over the limit of {MAX_DOCUMENT_BYTES:,} bytes")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowFormatError(f"the workflow is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise WorkflowFormatError("the workflow is nested too deeply to be a workflow") from exc
    return data


def workflow_from_json(data: Any) -> dict[str, Any]:
    """Accept an already-decoded document; unwrap ``{"prompt": ...}`` and check it is an object of nodes."""
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data:
        data = data["prompt"]
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"a workflow must be a JSON object of nodes in API format, not {_json_kind(data)}")
    if isinstance(data.get("nodes"), list) and "links" in data:
        raise WorkflowFormatError("this looks like a UI-format workflow; export it with 'Save (API Format)' in ComfyUI")
    return data


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
