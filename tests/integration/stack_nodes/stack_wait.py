"""A custom node pack for the local-stack tests: a node that takes as long as it is told (with progress), and
one that fails."""

from __future__ import annotations

import time
from typing import Any

from comfyserve.engine.context import ProgressBar


class StackTestWait:
    """Passes ``image`` through after ``seconds``, in ``steps`` slices that report progress (and so notice a
    cancellation). Never cached, so every job waits."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 60.0, "step": 0.01}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 1000}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "wait"
    CATEGORY = "testing"

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")

    def wait(self, image: Any, seconds: float, steps: int) -> tuple[Any]:
        bar = ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds / steps)
            bar.update(1)
        return (image,)


class StackTestFail:
    """Raises ``ValueError(message)``: a node that fails at run time."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "message": ("STRING", {"default": "boom"})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "fail"
    CATEGORY = "testing"

    def fail(self, image: Any, message: str) -> tuple[Any]:
        raise ValueError(message)


NODE_CLASS_MAPPINGS = {"StackTestWait": StackTestWait, "StackTestFail": StackTestFail}
NODE_DISPLAY_NAME_MAPPINGS = {"StackTestWait": "Wait (stack tests)", "StackTestFail": "Fail (stack tests)"}
