"""ComfyUI's text utilities: Preview Any (``comfy_extras/nodes_preview_any.py``) and string concatenation
(``comfy_extras/nodes_string.py``)."""

from __future__ import annotations

import json
from typing import Any


def preview_text(source: Any) -> str:
    """How Preview Any shows a value: strings as they are, numbers and booleans through ``str``, anything else
    as JSON, else its ``str``; nothing linked reads ``None``."""
    if source is None:
        return "None"
    if isinstance(source, str):
        return source
    if isinstance(source, int | float | bool):
        return str(source)
    try:
        return json.dumps(source)
    except Exception:  # what json cannot encode (tensors, models): ComfyUI falls back to str()
        try:
            return str(source)
        except Exception:
            return "source exists, but could not be serialized."


class PreviewAny:
    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "utils"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": ("*", {})}}

    def main(self, source: Any = None) -> dict[str, Any]:
        """The value as text in the node's ui output, ``{"text": [text]}`` in ``/history`` and ``executed``."""
        return {"ui": {"text": (preview_text(source),)}}


class StringConcatenate:
    RETURN_TYPES = ("STRING",)
    FUNCTION = "execute"
    CATEGORY = "utils/string"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "string_a": ("STRING", {"multiline": True}),
                "string_b": ("STRING", {"multiline": True}),
                "delimiter": ("STRING", {"default": "", "multiline": False}),
            }
        }

    def execute(self, string_a: str, string_b: str, delimiter: str) -> tuple[str]:
        return (delimiter.join((string_a, string_b)),)


NODE_CLASS_MAPPINGS = {"PreviewAny": PreviewAny, "StringConcatenate": StringConcatenate}

NODE_DISPLAY_NAME_MAPPINGS = {"PreviewAny": "Preview Any", "StringConcatenate": "Concatenate"}
