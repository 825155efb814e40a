"""ComfyUI's image resizing to a size budget: to a total pixel count (``comfy_extras/nodes_post_processing.py``)
and to a longest side (``comfy_extras/nodes_images.py``). Both resize through ``common_upscale``, uncropped."""

from __future__ import annotations

import math
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.image import MAX_RESOLUTION, UPSCALE_METHODS, common_upscale

# ComfyUI lists "bilinear" twice here; the catalog keeps its list as it is.
MAX_DIMENSION_METHODS = ["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]


def _resize(image: Any, width: int, height: int, method: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise NodeInputError("image must be an IMAGE tensor of shape [batch, height, width, channels]")
    return common_upscale(image.movedim(-1, 1), width, height, method, "disabled").movedim(1, -1)


class ImageScaleToTotalPixels:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    CATEGORY = "image/upscaling"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "upscale_method": ("COMBO", {"multiselect": False, "options": list(UPSCALE_METHODS)}),
                "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01}),
            }
        }

    def execute(self, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple[torch.Tensor]:
        """The aspect ratio kept, each side rounded, at ``megapixels`` x 1024² pixels."""
        total = int(megapixels * 1024 * 1024)
        scale = math.sqrt(total / (image.shape[2] * image.shape[1]))
        return (_resize(image, round(image.shape[2] * scale), round(image.shape[1] * scale), upscale_method),)


class ImageScaleToMaxDimension:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (MAX_DIMENSION_METHODS,),
                "largest_size": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            }
        }

    def upscale(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple[torch.Tensor]:
        """The longer side becomes ``largest_size``, the other keeps the aspect ratio (rounded)."""
        height, width = image.shape[1], image.shape[2]
        if height > width:
            width, height = round(width / height * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round(height / width * largest_size)
        else:
            width = height = largest_size
        return (_resize(image, width, height, upscale_method),)


NODE_CLASS_MAPPINGS = {
    "ImageScaleToTotalPixels": ImageScaleToTotalPixels,
    "ImageScaleToMaxDimension": ImageScaleToMaxDimension,
}
# As ComfyUI: neither declares a display name (ImageScaleToTotalPixels reports null, the frontend shows the class).
