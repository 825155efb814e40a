"""A node that ignores cancellation (one long sleep with no progress or cancellation point, as node code stuck
in a call of its own would): a job that cannot be drained, for the worker process tests. It sleeps only while
its ``marker`` file is absent, creating it first, so the job's redelivery runs through."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


class ProcessTestIgnoreStop:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 60.0, "min": 0.0, "max": 600.0}),
                "marker": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sleep"
    CATEGORY = "testing"

    def sleep(self, image: Any, seconds: float, marker: str) -> tuple[Any]:
        path = Path(marker)
        if not path.exists():
            path.touch()
            time.sleep(seconds)
        return (image,)


NODE_CLASS_MAPPINGS = {"ProcessTestIgnoreStop": ProcessTestIgnoreStop}
