"""Stub producers, a no-op chain node, arithmetic, an output node, a failing node, variadic and hidden inputs."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.errors import NodeInputError

IMAGE_SIZE = {"default": 8, "min": 1, "max": 4096}
CONTENT = {"WHITE": 1.0, "BLACK": 0.0, "NOISE": 0.5}


class StubImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "content": (list(CONTENT),),
                "height": ("INT", IMAGE_SIZE),
                "width": ("INT", IMAGE_SIZE),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stub"
    CATEGORY = "Testing/Stub Nodes"

    def stub(self, content: str, height: int, width: int, batch_size: int) -> tuple[list[float]]:
        return ([CONTENT[content]] * batch_size,)


class StubMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
                "height": ("INT", IMAGE_SIZE),
                "width": ("INT", IMAGE_SIZE),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("MASK",)
    FUNCTION = "stub"
    CATEGORY = "Testing/Stub Nodes"

    def stub(self, value: float, height: int, width: int, batch_size: int) -> tuple[list[float]]:
        return ([value] * batch_size,)


class StubInt:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": -(2**31), "max": 2**31})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "stub"
    CATEGORY = "Testing/Stub Nodes"

    def stub(self, value: int) -> tuple[int]:
        return (value,)


class StubFloat:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("FLOAT", {"default": 0.0, "min": -1e9, "max": 1e9})}}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "stub"
    CATEGORY = "Testing/Stub Nodes"

    def stub(self, value: float) -> tuple[float]:
        return (value,)


class TestNoOp:
    """Passes its input through: the node of the executor's overhead benchmark."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "noop"
    CATEGORY = "Testing/Nodes"

    def noop(self, value: int) -> tuple[int]:
        return (value,)


class TestIntMathOperation:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "a": ("INT", {"default": 0}),
                "b": ("INT", {"default": 0}),
                "operation": (["add", "subtract", "multiply"],),
            }
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "math"
    CATEGORY = "Testing/Logic"

    def math(self, a: int, b: int, operation: str) -> tuple[int]:
        return ({"add": a + b, "subtract": a - b, "multiply": a * b}[operation],)


class TestSaveImage:
    """An output node: reports each image of the batch as ``{"value", "prefix"}`` in its UI."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def save(self, images: list[float], filename_prefix: str) -> dict[str, Any]:
        return {"ui": {"images": [{"value": v, "prefix": filename_prefix} for v in images]}}


class TestReport:
    """An output node for any value: ``{"values": [value]}`` (list-mapped calls merge their lists)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}}

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def report(self, value: Any) -> dict[str, Any]:
        return {"ui": {"values": [value]}}


class TestOutputNodeWithSocketOutput:
    """An output node that also has an output socket: ``{"ui", "result"}``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "value": ("FLOAT", {"default": 0.5})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "process"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def process(self, image: list[float], value: float) -> dict[str, Any]:
        result = [min(1.0, v * value) for v in image]
        return {"ui": {"texts": [f"scaled by {value}"]}, "result": (result,)}


class TestFailingNode:
    """Raises: ``kind`` "input" raises NodeInputError (a user-facing message), anything else a ValueError."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("*",), "message": ("STRING", {"default": "boom"})},
            "optional": {"kind": (["value", "input"],)},
        }

    RETURN_TYPES = ("INT",)
    FUNCTION = "fail"
    CATEGORY = "Testing/Nodes"

    def fail(self, value: Any, message: str, kind: str = "value") -> tuple[int]:
        if kind == "input":
            raise NodeInputError(message)
        raise ValueError(message)


class TestVariadicAverage:
    """``input1`` is declared; ``input2``, ``input3``... arrive as undeclared linked inputs (kwargs)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"input1": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "variadic_average"
    CATEGORY = "Testing/Nodes"

    def variadic_average(self, input1: list[float], **kwargs: list[float]) -> tuple[list[float]]:
        images = [input1, *kwargs.values()]
        return ([sum(pixels) / len(images) for pixels in zip(*images, strict=True)],)


class TestHiddenInputs:
    """Reports the hidden inputs it receives."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"value": ("INT", {"default": 0})},
            "hidden": {
                "prompt": "PROMPT",
                "extra_pnginfo": "EXTRA_PNGINFO",
                "unique_id": "UNIQUE_ID",
                "dynprompt": "DYNPROMPT",
            },
        }

    RETURN_TYPES = ()
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "Testing/Nodes"

    def report(self, value: int, prompt: Any, extra_pnginfo: Any, unique_id: str, dynprompt: Any) -> dict[str, Any]:
        return {
            "ui": {
                "unique_id": [unique_id],
                "prompt_nodes": sorted(prompt),
                "extra_pnginfo": [extra_pnginfo],
                "dynprompt_has_self": [dynprompt.has_node(unique_id)],
            }
        }


class TestCallCounter:
    """Counts its calls on the instance, which the executor keeps per (node id, class) across runs."""

    NOT_IDEMPOTENT = True

    def __init__(self) -> None:
        self.calls = 0

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    CATEGORY = "Testing/Nodes"

    def count(self, value: int) -> tuple[int]:
        self.calls += 1
        return (self.calls,)


NODE_CLASS_MAPPINGS = {
    "StubImage": StubImage,
    "StubMask": StubMask,
    "StubInt": StubInt,
    "StubFloat": StubFloat,
    "TestNoOp": TestNoOp,
    "TestIntMathOperation": TestIntMathOperation,
    "TestSaveImage": TestSaveImage,
    "TestReport": TestReport,
    "TestOutputNodeWithSocketOutput": TestOutputNodeWithSocketOutput,
    "TestFailingNode": TestFailingNode,
    "TestVariadicAverage": TestVariadicAverage,
    "TestHiddenInputs": TestHiddenInputs,
    "TestCallCounter": TestCallCounter,
}
NODE_DISPLAY_NAME_MAPPINGS = {name: name for name in NODE_CLASS_MAPPINGS}
