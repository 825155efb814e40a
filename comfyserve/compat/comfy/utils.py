"""``comfy.utils``: progress bars wired to the job's progress and cancellation, resizing, file loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.models.files import read_state_dict
from comfyserve.nodes.image import common_upscale

__all__ = ["PROGRESS_BAR_ENABLED", "ProgressBar", "common_upscale", "load_torch_file", "set_progress_bar_enabled"]

PROGRESS_BAR_ENABLED = True


def set_progress_bar_enabled(enabled: bool) -> None:
    """Accepted for compatibility; progress always goes to the job's events."""


class ProgressBar(context.ProgressBar):
    """``ProgressBar(total, node_id=None)``: each update is a ``progress`` event of the running node and a
    cancellation point. ``node_id`` and ``preview`` are accepted (progress is reported on the calling node)."""

    def __init__(self, total: int, node_id: str | None = None) -> None:
        super().__init__(total)
        self.node_id = node_id

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        super().update_absolute(value, total)


def load_torch_file(
    ckpt: str | Path, safe_load: bool = False, device: Any = None, return_metadata: bool = False
) -> Any:
    """A ``.safetensors`` / ``.ckpt`` / ``.pt`` state dict (pickles load weights-only)."""
    sd = read_state_dict(Path(ckpt))
    if device is not None:
        sd = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in sd.items()}
    return (sd, None) if return_metadata else sd
