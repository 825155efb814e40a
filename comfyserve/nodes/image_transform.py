"""ComfyUI's image transform and batch utilities: size, flip, rotate, stitch, repeat, pick, masked composite.

IMAGE is ``[B, H, W, C]`` in 0..1. Each node behaves as ComfyUI 0.3.64's (``comfy_extras/nodes_images.py``,
``comfy_extras/nodes_mask.py``), quirks included where a workflow could see them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.sampling.resize import repeat_to_batch
from comfyserve.nodes.image import MAX_RESOLUTION, common_upscale

ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]
FLIP_METHODS = ["x-axis: vertically", "y-axis: horizontally"]
STITCH_DIRECTIONS = ["right", "down", "left", "up"]
SPACING_COLORS: dict[str, tuple[float, ...]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}


def _image(image: Any, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise NodeInputError(f"{name} must be an IMAGE tensor of shape [batch, height, width, channels]")
    return image


def composite(
    destination: torch.Tensor,
    source: torch.Tensor,
    x: int,
    y: int,
    mask: torch.Tensor | None = None,
    multiplier: int = 1,
    resize_source: bool = False,
) -> torch.Tensor:
    """Paste ``source`` onto ``destination`` (both ``[B, C, H, W]``, destination changed in place) at
    ``(x, y) // multiplier``, weighted by ``mask`` (bilinearly resized to the source), clipped to the destination."""
    source = source.to(destination.device)
    if resize_source:
        source = F.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = repeat_to_batch(source, destination.shape[0])
    x = max(-source.shape[-1] * multiplier, min(x, destination.shape[-1] * multiplier))
    y = max(-source.shape[-2] * multiplier, min(y, destination.shape[-2] * multiplier))
    left, top = x // multiplier, y // multiplier
    right, bottom = left + source.shape[-1], top + source.shape[-2]
    if mask is None:
        weight = torch.ones_like(source)
    else:
        planes = mask.to(destination.device).reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        weight = repeat_to_batch(F.interpolate(planes, size=source.shape[-2:], mode="bilinear"), source.shape[0])
    visible_w = destination.shape[-1] - left + min(0, x)
    visible_h = destination.shape[-2] - top + min(0, y)
    weight = weight[:, :, :visible_h, :visible_w]
    blended = weight * source[..., :visible_h, :visible_w] + (1.0 - weight) * destination[..., top:bottom, left:right]
    destination[..., top:bottom, left:right] = blended
    return destination


class GetImageSize:
    DESCRIPTION = "Returns width and height of the image, and passes it through unchanged."
    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")
    FUNCTION = "get_size"
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}, "hidden": {"unique_id": "UNIQUE_ID"}}

    def get_size(self, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        """ComfyUI also shows the size on the node as progress text; comfyserve has no such channel."""
        batch, height, width = _image(image).shape[:3]
        return width, height, batch


class ImageRotate:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "rotate"
    CATEGORY = "image/transform"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "rotation": (ROTATIONS,)}}

    def rotate(self, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        """Clockwise quarter turns."""
        turns = ROTATIONS.index(rotation) if rotation in ROTATIONS else 0
        return (torch.rot90(_image(image), k=turns, dims=[2, 1]),)


class ImageFlip:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "flip"
    CATEGORY = "image/transform"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "flip_method": (FLIP_METHODS,)}}

    def flip(self, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        """``x-axis`` mirrors top to bottom, ``y-axis`` left to right."""
        image = _image(image)
        if flip_method.startswith("x"):
            return (torch.flip(image, dims=[1]),)
        if flip_method.startswith("y"):
            return (torch.flip(image, dims=[2]),)
        return (image,)


def _match_batch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The shorter batch padded with copies of its last image."""
    size = max(a.shape[0], b.shape[0])

    def grow(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t[-1:].repeat(size - t.shape[0], 1, 1, 1)]) if t.shape[0] < size else t

    return grow(a), grow(b)


def _pad_centred(image: torch.Tensor, axis: int, size: int, value: float) -> torch.Tensor:
    """Pad ``image`` along ``axis`` (1 = height, 2 = width) to ``size``, the odd pixel after."""
    missing = size - image.shape[axis]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    pad = (0, 0, 0, 0, before, after) if axis == 1 else (0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _fill_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    missing = channels - image.shape[-1]
    if missing <= 0:
        return image
    return torch.cat([image, torch.ones(*image.shape[:-1], missing, device=image.device)], dim=-1)


class ImageStitch:
    DESCRIPTION = (
        "\nStitches image2 to image1 in the specified direction.\n"
        "If image2 is not provided, returns image1 unchanged.\n"
        "Optional spacing can be added between images.\n"
    )
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "stitch"
    CATEGORY = "image/transform"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE",),
                "direction": (STITCH_DIRECTIONS, {"default": "right"}),
                "match_image_size": ("BOOLEAN", {"default": True}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                "spacing_color": (list(SPACING_COLORS), {"default": "white"}),
            },
            "optional": {"image2": ("IMAGE",)},
        }

    def stitch(
        self,
        image1: torch.Tensor,
        direction: str,
        match_image_size: bool,
        spacing_width: int,
        spacing_color: str,
        image2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        """``image2`` joins ``image1`` on the ``direction`` side; with ``match_image_size`` it is first resized
        (Lanczos) to ``image1``'s height (left/right) or width (up/down), otherwise the smaller one is padded,
        centred, with the spacing colour's grey level (0 for a coloured spacer)."""
        image1 = _image(image1, "image1")
        if image2 is None:
            return (image1,)
        image2 = _image(image2, "image2")
        if direction not in STITCH_DIRECTIONS or spacing_color not in SPACING_COLORS:
            raise NodeInputError(f"unknown direction {direction!r} or spacing colour {spacing_color!r}")
        horizontal = direction in ("left", "right")
        image1, image2 = _match_batch(image1, image2)
        if match_image_size:
            (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
            aspect = w2 / h2
            width, height = (int(h1 * aspect), h1) if horizontal else (w1, int(w1 / aspect))
            image2 = common_upscale(image2.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
        else:
            axis = 1 if horizontal else 2
            size = max(image1.shape[axis], image2.shape[axis])
            value = 1.0 if spacing_color == "white" else 0.0
            image1, image2 = (_pad_centred(t, axis, size, value) for t in (image1, image2))
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _fill_channels(image1, channels), _fill_channels(image2, channels)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            parts.insert(1, _spacer(image1, image2, spacing_width + spacing_width % 2, horizontal, spacing_color))
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def _spacer(image1: torch.Tensor, image2: torch.Tensor, width: int, horizontal: bool, color: str) -> torch.Tensor:
    channels = image1.shape[-1]
    if horizontal:
        shape = (image1.shape[0], max(image1.shape[1], image2.shape[1]), width, channels)
    else:
        shape = (image1.shape[0], width, max(image1.shape[2], image2.shape[2]), channels)
    spacer = torch.zeros(shape, device=image1.device)
    for channel, value in enumerate(SPACING_COLORS[color][: min(3, channels)]):
        spacer[..., channel] = value
    if channels == 4:
        spacer[..., 3] = 1.0
    return spacer


class RepeatImageBatch:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "repeat"
    CATEGORY = "image/batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}}

    def repeat(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        """The whole batch ``amount`` times over (1, 2, 1, 2 … for a batch of two)."""
        return (_image(image).repeat((amount, 1, 1, 1)),)


class ImageFromBatch:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "frombatch"
    CATEGORY = "image/batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                "length": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    def frombatch(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        """``length`` images from ``batch_index``; an index past the end takes the last image."""
        image = _image(image)
        start = min(image.shape[0] - 1, batch_index)
        count = min(image.shape[0] - start, length)
        return (image[start : start + count].clone(),)


class ImageCompositeMasked:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "composite"
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {
            "required": {
                "destination": ("IMAGE",),
                "source": ("IMAGE",),
                "x": position,
                "y": position,
                "resize_source": ("BOOLEAN", {"default": False}),
            },
            "optional": {"mask": ("MASK",)},
        }

    def composite(
        self,
        destination: torch.Tensor,
        source: torch.Tensor,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        """``source`` over ``destination`` at (x, y). Source channels beyond the destination's (an alpha) are
        dropped; a source with fewer channels than the destination is refused (ComfyUI fails on it too)."""
        destination, source = _image(destination, "destination"), _image(source, "source")
        if destination.shape[-1] > source.shape[-1]:
            raise NodeInputError(
                f"source has {source.shape[-1]} channels, fewer than the destination's {destination.shape[-1]}"
            )
        source = source[..., : destination.shape[-1]]
        out = composite(destination.clone().movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (out.movedim(1, -1),)


NODE_CLASS_MAPPINGS = {
    "GetImageSize": GetImageSize,
    "ImageRotate": ImageRotate,
    "ImageFlip": ImageFlip,
    "ImageStitch": ImageStitch,
    "RepeatImageBatch": RepeatImageBatch,
    "ImageFromBatch": ImageFromBatch,
    "ImageCompositeMasked": ImageCompositeMasked,
}

# As ComfyUI: only these two declare display names; the others show under their class names.
NODE_DISPLAY_NAME_MAPPINGS = {"GetImageSize": "Get Image Size", "ImageStitch": "Image Stitch"}
