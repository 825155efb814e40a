"""ComfyUI's Canny edge detector (``comfy_extras/nodes_canny``), which is kornia's ``canny``: the image's
grayscale edges (0 or 1) as an RGB IMAGE. Computed on the sampling device, returned on the CPU."""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.device import policy

_THRESHOLD = {"min": 0.01, "max": 0.99, "step": 0.01}


def canny_edges(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """Edges of an IMAGE ``[B, H, W, C]`` as an IMAGE ``[B, H, W, 3]`` on ``image``'s device."""
    if low_threshold > high_threshold:
        raise NodeInputError(
            f"low_threshold ({low_threshold}) must not be greater than high_threshold ({high_threshold})"
        )
    from kornia.filters import canny  # imported on first use: kornia takes a while to import

    _magnitude, edges = canny(image.movedim(-1, 1), low_threshold, high_threshold)
    return edges.repeat(1, 3, 1, 1).movedim(1, -1)


class Canny:
    V3_SCHEMA = True  # ComfyUI's io.ComfyNode entry shape
    CATEGORY = "image/preprocessors"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "low_threshold": ("FLOAT", {"default": 0.4, **_THRESHOLD}),
                "high_threshold": ("FLOAT", {"default": 0.8, **_THRESHOLD}),
            }
        }

    def execute(self, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple[torch.Tensor]:
        if not isinstance(image, torch.Tensor) or image.ndim != 4:
            raise NodeInputError("image must be an IMAGE of shape [batch, height, width, channels]")
        edges = canny_edges(image.to(policy().device), low_threshold, high_threshold)
        return (edges.to("cpu", torch.float32),)


NODE_CLASS_MAPPINGS = {"Canny": Canny}
