"""ComfyUI's mask editing nodes (``comfy_extras/nodes_mask.py``): threshold, grow/shrink, feather, composite,
preview.

MASK is a float32 tensor ``[B, H, W]`` in 0..1; a 2-D mask is a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.image import MAX_RESOLUTION
from comfyserve.nodes.image_io import PreviewImage


def _planes(mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim < 2:
        raise NodeInputError("mask must be a MASK tensor of shape [batch, height, width]")
    return mask.reshape((-1, mask.shape[-2], mask.shape[-1]))


class ThresholdMask:
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK",),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def image_to_mask(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        """1 where the mask is strictly above ``value``, else 0."""
        return ((mask > value).float(),)


def grow(masks: torch.Tensor, steps: int, tapered_corners: bool) -> torch.Tensor:
    """``|steps|`` grey dilations (``steps > 0``) or erosions (``steps < 0``) of ``[B, H, W]`` masks over a 3x3
    neighbourhood, the corners left out when ``tapered_corners``; edges repeat the border pixel (scipy's
    ``grey_dilation`` with its default ``reflect`` mode, as ComfyUI uses)."""
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if not (tapered_corners and dy and dx)]
    height, width = masks.shape[-2:]
    out = masks.to(torch.float32)
    for _ in range(abs(steps)):
        padded = F.pad(out.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
        shifted = torch.stack([padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in offsets])
        out = shifted.amax(dim=0) if steps > 0 else shifted.amin(dim=0)
    return out


class GrowMask:
    RETURN_TYPES = ("MASK",)
    FUNCTION = "expand_mask"
    CATEGORY = "mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK",),
                "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
                "tapered_corners": ("BOOLEAN", {"default": True}),
            }
        }

    def expand_mask(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        return (grow(_planes(mask), expand, tapered_corners),)


def _ramp(size: int, count: int, from_end: bool) -> torch.Tensor:
    """Per-line factors of one feathered edge: line ``i`` of ``count`` gets ``(i + 1) / count``. From the end,
    ComfyUI indexes lines ``-i``, so its first factor lands on line 0, not on the last line."""
    factors = torch.ones(size, dtype=torch.float32)
    for i in range(count):
        factors[-i if from_end else i] = (i + 1.0) / count
    return factors


class FeatherMask:
    RETURN_TYPES = ("MASK",)
    FUNCTION = "feather"
    CATEGORY = "mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {"required": {"mask": ("MASK",), "left": side, "top": side, "right": side, "bottom": side}}

    def feather(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple[torch.Tensor]:
        """A linear fade over ``left``/``right`` columns and ``top``/``bottom`` rows (each at most the side)."""
        out = _planes(mask).clone()
        height, width = out.shape[-2:]
        out *= _ramp(width, min(left, width), from_end=False).to(out.device)
        out *= _ramp(width, min(right, width), from_end=True).to(out.device)
        out *= _ramp(height, min(top, height), from_end=False).to(out.device).unsqueeze(-1)
        out *= _ramp(height, min(bottom, height), from_end=True).to(out.device).unsqueeze(-1)
        return (out,)


_COMBINE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "multiply": torch.mul,
    "add": torch.add,
    "subtract": torch.sub,
    "and": lambda a, b: torch.logical_and(a.round().bool(), b.round().bool()).float(),
    "or": lambda a, b: torch.logical_or(a.round().bool(), b.round().bool()).float(),
    "xor": lambda a, b: torch.logical_xor(a.round().bool(), b.round().bool()).float(),
}


class MaskComposite:
    RETURN_TYPES = ("MASK",)
    FUNCTION = "combine"
    CATEGORY = "mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {
            "required": {
                "destination": ("MASK",),
                "source": ("MASK",),
                "x": position,
                "y": position,
                "operation": (list(_COMBINE),),
            }
        }

    def combine(
        self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str
    ) -> tuple[torch.Tensor]:
        """``source`` (its top-left corner at ``x``, ``y``, cut at the destination's edges) combined into
        ``destination`` by ``operation`` (and/or/xor on masks rounded to 0/1), the result clamped to 0..1."""
        out = _planes(destination).clone()
        source = _planes(source)
        bottom, right = min(y + source.shape[-2], out.shape[-2]), min(x + source.shape[-1], out.shape[-1])
        if bottom > y and right > x:
            region = out[:, y:bottom, x:right]
            out[:, y:bottom, x:right] = _COMBINE[operation](region, source[:, : bottom - y, : right - x])
        return (out.clamp(0.0, 1.0),)


class MaskPreview(PreviewImage):
    COMPRESS_LEVEL = 4
    FUNCTION = "execute"
    CATEGORY = "mask"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."  # ComfyUI's, inherited from SaveImage

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def execute(
        self,
        mask: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The mask as a grey RGB preview in the temp folder."""
        preview = _planes(mask).unsqueeze(-1).expand(-1, -1, -1, 3)
        return self.save_images(preview, filename_prefix, prompt, extra_pnginfo)


NODE_CLASS_MAPPINGS = {
    "ThresholdMask": ThresholdMask,
    "GrowMask": GrowMask,
    "FeatherMask": FeatherMask,
    "MaskComposite": MaskComposite,
    "MaskPreview": MaskPreview,
}
# As ComfyUI: none of these declares a display name.
