"""A custom node pack for the real-ComfyUI tests, loaded by ComfyUI from a folder (our test code, run inside
ComfyUI's process): an image maker that reports progress step by step, can be interrupted between steps, and can
crash the whole process once on demand."""

import os
import time
from pathlib import Path

import comfy.utils
import torch


class ComfyserveTestSteps:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "size": ("INT", {"default": 8, "min": 1, "max": 256}),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
                "steps": ("INT", {"default": 3, "min": 1, "max": 10000}),
                "seconds_per_step": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0}),
                "crash_once_marker": ("STRING", {"default": ""}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "comfyserve/test"

    def make(self, size, value, steps, seconds_per_step, crash_once_marker):
        if crash_once_marker and not Path(crash_once_marker).exists():
            Path(crash_once_marker).touch()
            os._exit(9)  # the whole ComfyUI process dies mid-prompt
        bar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            time.sleep(seconds_per_step)
            bar.update(1)  # ComfyUI's progress hook sends "progress" and raises once /interrupt was posted
        return (torch.full((1, size, size, 3), float(value)),)


NODE_CLASS_MAPPINGS = {"ComfyserveTestSteps": ComfyserveTestSteps}
