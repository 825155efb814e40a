"""VALIDATE_INPUTS variants (ComfyUI's TestCustomValidation1, 2, 4 and 5), with list-of-floats images."""

from __future__ import annotations

from typing import Any


class _Mix:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "custom_validation"
    CATEGORY = "Testing/Validation"

    def custom_validation(self, input1: Any, input2: Any) -> tuple[list[float]]:
        first = input1 if isinstance(input1, list) else [float(input1)]
        second = input2 if isinstance(input2, list) else [float(input2)]
        return ([(a + b) / 2 for a, b in zip(first, second, strict=False)],)


class TestCustomValidation1(_Mix):
    """Takes IMAGE or FLOAT; the hook rejects other constant types (links arrive as None)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("IMAGE,FLOAT",), "input2": ("IMAGE,FLOAT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input1: Any = None, input2: Any = None) -> bool | str:
        for name, value in (("input1", input1), ("input2", input2)):
            if value is not None and not isinstance(value, list | float):
                return f"Invalid type of {name}: {type(value).__name__}"
        return True


class TestCustomValidation2(_Mix):
    """Declares ``input_types``, so the built-in link type check is skipped and the hook decides."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("IMAGE,FLOAT",), "input2": ("IMAGE,FLOAT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types: dict[str, str], input1: Any = None, input2: Any = None) -> bool | str:
        for name in ("input1", "input2"):
            if name in input_types and input_types[name] not in ("IMAGE", "FLOAT"):
                return f"Invalid type of {name}: {input_types[name]}"
        return True


class TestCustomValidation4(_Mix):
    """Plain FLOAT inputs with a hook that insists on floats."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("FLOAT",), "input2": ("FLOAT",)}}

    @classmethod
    def VALIDATE_INPUTS(cls, input1: Any, input2: Any) -> bool | str:
        for name, value in (("input1", input1), ("input2", input2)):
            if value is not None and not isinstance(value, float):
                return f"Invalid type of {name}: {type(value).__name__}"
        return True


class TestCustomValidation5(_Mix):
    """A ``**kwargs`` hook: the built-in min/max checks are off, the hook only refuses 7.0."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        bounded = ("FLOAT", {"min": 0.0, "max": 1.0})
        return {"required": {"input1": bounded, "input2": bounded}}

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs: Any) -> bool | str:
        if kwargs.get("input2") == 7.0:
            return "7s are not allowed. I've never liked 7s."
        return True


NODE_CLASS_MAPPINGS = {
    "TestCustomValidation1": TestCustomValidation1,
    "TestCustomValidation2": TestCustomValidation2,
    "TestCustomValidation4": TestCustomValidation4,
    "TestCustomValidation5": TestCustomValidation5,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
