"""The prompt the real-ComfyUI tests run: the test pack's stepping node, then SaveImage."""

from __future__ import annotations

from typing import Any


def steps_prompt(
    steps: int = 3, seconds: float = 0.0, value: float = 0.25, crash_marker: str = "", prefix: str = "pack"
) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "ComfyserveTestSteps",
            "inputs": {
                "size": 8,
                "value": value,
                "steps": steps,
                "seconds_per_step": seconds,
                "crash_once_marker": crash_marker,
            },
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }
