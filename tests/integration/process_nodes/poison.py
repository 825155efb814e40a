"""A node that takes its worker process down with it (SIGKILL, as an out-of-memory kill or a driver crash
would): a poison workflow for the worker process tests."""

from __future__ import annotations

import os
import signal
from typing import Any


class ProcessTestKillWorker:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "kill"
    CATEGORY = "testing"

    def kill(self, image: Any) -> tuple[Any]:
        os.kill(os.getpid(), signal.SIGKILL)
        return (image,)


NODE_CLASS_MAPPINGS = {"ProcessTestKillWorker": ProcessTestKillWorker}
