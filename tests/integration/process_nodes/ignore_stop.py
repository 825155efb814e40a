"""A node that ignores cancellation and signals: one native call of about ``seconds`` (OpenSSL's PBKDF2, which
releases the GIL and checks for nothing until it returns, as a long kernel or decoder would): a job that cannot
be drained, for the worker process tests. It runs only while its ``marker`` file is absent, creating it first,
so the job's redelivery runs through."""

from __future__ import annotations

import hashlib
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
            native_call(seconds)
        return (image,)


def native_call(seconds: float) -> None:
    calibration = 20_000
    started = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"comfyserve", b"salt", calibration)
    per_round = max(time.perf_counter() - started, 1e-6) / calibration
    hashlib.pbkdf2_hmac("sha256", b"comfyserve", b"salt", max(1, int(seconds / per_round)))


NODE_CLASS_MAPPINGS = {"ProcessTestIgnoreStop": ProcessTestIgnoreStop}
