"""ComfyUI's primitive nodes (``comfy_extras/nodes_primitive.py``): a widget value as an output."""

from __future__ import annotations

import sys
from typing import Any


class _Primitive:
    """Returns its ``value`` input unchanged; subclasses declare the type."""

    VALUE: tuple[str, dict[str, Any]] = ("STRING", {})

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": cls.VALUE}}

    FUNCTION = "execute"
    CATEGORY = "utils/primitive"

    def execute(self, value: Any) -> tuple[Any]:
        return (value,)


class PrimitiveString(_Primitive):
    VALUE = ("STRING", {"multiline": False})
    RETURN_TYPES = ("STRING",)


class PrimitiveStringMultiline(_Primitive):
    VALUE = ("STRING", {"multiline": True})
    RETURN_TYPES = ("STRING",)


class PrimitiveInt(_Primitive):
    VALUE = ("INT", {"min": -sys.maxsize, "max": sys.maxsize, "control_after_generate": True})
    RETURN_TYPES = ("INT",)


class PrimitiveFloat(_Primitive):
    VALUE = ("FLOAT", {"min": -sys.maxsize, "max": sys.maxsize})
    RETURN_TYPES = ("FLOAT",)


class PrimitiveBoolean(_Primitive):
    VALUE = ("BOOLEAN", {})
    RETURN_TYPES = ("BOOLEAN",)


NODE_CLASS_MAPPINGS = {
    "PrimitiveString": PrimitiveString,
    "PrimitiveStringMultiline": PrimitiveStringMultiline,
    "PrimitiveInt": PrimitiveInt,
    "PrimitiveFloat": PrimitiveFloat,
    "PrimitiveBoolean": PrimitiveBoolean,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PrimitiveString": "String",
    "PrimitiveStringMultiline": "String (Multiline)",
    "PrimitiveInt": "Int",
    "PrimitiveFloat": "Float",
    "PrimitiveBoolean": "Boolean",
}
