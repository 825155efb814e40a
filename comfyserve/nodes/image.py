"""ComfyUI's model-free image nodes: scale, invert, crop, pad, batch, empty, blur and sharpen.

IMAGE is a float32 tensor ``[B, H, W, C]`` in 0..1; torch's resampling and convolution work on
``[B, C, H, W]``, so the nodes move the channel axis around each operation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from comfyserve.engine.context import check_pixels
from comfyserve.engine.errors import NodeInputError
from comfyserve.models.sampling.resize import center_crop_to_aspect
from comfyserve.nodes.imagefile import to_uint8

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]


def _int(default: int, low: int, high: int = MAX_RESOLUTION, step: int = 1) -> tuple[str, dict[str, int]]:
    return ("INT", {"default": default, "min": low, "max": high, "step": step})


def common_upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``height`` x ``width`` as ComfyUI's ``comfy.utils.common_upscale`` does:
    ``center`` first crops to the target aspect ratio; ``lanczos`` goes through Pillow at 8 bits."""
    if width < 1 or height < 1:
        raise NodeInputError(f"cannot resize to {width}x{height}: both sides must be at least 1 pixel")
    check_pixels(width, height)
    if method not in UPSCALE_METHODS:
        raise NodeInputError(f"unknown upscale method {method!r}; expected one of {UPSCALE_METHODS}")
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "lanczos":
        return _lanczos(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def _lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's LANCZOS per channel (Pillow resamples channels independently, so this equals an RGB resize)."""
    planes = to_uint8(samples)
    out = np.empty((*planes.shape[:2], height, width), dtype=np.float32)
    for b, c in np.ndindex(*planes.shape[:2]):
        resized = Image.fromarray(planes[b, c]).resize((width, height), resample=Image.Resampling.LANCZOS)
        out[b, c] = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(out).to(samples.device, samples.dtype)


def gaussian_kernel(kernel_size: int, sigma: float) -> torch.Tensor:
    """ComfyUI's post-processing kernel: a Gaussian over a grid spanning -1..1, so ``sigma`` is relative to
    the radius, normalised to sum 1."""
    axis = torch.linspace(-1, 1, kernel_size)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    g = torch.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    return g / g.sum()


def _convolve(image: torch.Tensor, kernel: torch.Tensor, radius: int, input_name: str) -> torch.Tensor:
    """Depthwise 2-D convolution of an IMAGE with edges reflected (as ComfyUI's blur and sharpen)."""
    _, height, width, channels = image.shape
    if radius >= height or radius >= width:
        raise NodeInputError(
            f"{input_name} {radius} is too large for a {width}x{height} image (it must be smaller than both sides)"
        )
    weight = kernel.to(image.device, image.dtype).repeat(channels, 1, 1).unsqueeze(1)
    padded = F.pad(image.movedim(-1, 1), (radius, radius, radius, radius), mode="reflect")
    return F.conv2d(padded, weight, groups=channels).movedim(1, -1)


class ImageScale:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "width": _int(512, 0),
                "height": _int(512, 0),
                "crop": (CROP_METHODS,),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(
        self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        """A zero width or height keeps the aspect ratio; both zero returns the image unchanged."""
        if width == 0 and height == 0:
            return (image,)
        old_height, old_width = image.shape[1:3]
        if width == 0:
            width = max(1, round(old_width * height / old_height))
        elif height == 0:
            height = max(1, round(old_height * width / old_width))
        return (common_upscale(image.movedim(-1, 1), width, height, upscale_method, crop).movedim(1, -1),)


class ImageScaleBy:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        width = round(image.shape[2] * scale_by)
        height = round(image.shape[1] * scale_by)
        return (common_upscale(image.movedim(-1, 1), width, height, upscale_method, "disabled").movedim(1, -1),)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageCrop:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "width": _int(512, 1),
                "height": _int(512, 1),
                "x": _int(0, 0),
                "y": _int(0, 0),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"
    CATEGORY = "image/transform"

    def crop(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        """The origin is clamped inside the image; the region is clipped at its edges."""
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y : y + height, x : x + width, :],)


class ImagePadForOutpaint:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "left": _int(0, 0, step=8),
                "top": _int(0, 0, step=8),
                "right": _int(0, 0, step=8),
                "bottom": _int(0, 0, step=8),
                "feathering": _int(40, 0),
            }
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"
    CATEGORY = "image"

    def expand_image(
        self, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grey (0.5) padding; the mask is 1 on the padding and fades quadratically into the image over
        ``feathering`` pixels from each padded side (only when the image is over twice that size)."""
        batch, height, width, channels = image.shape
        check_pixels(width + left + right, height + top + bottom)
        shape = (batch, height + top + bottom, width + left + right, channels)
        padded = torch.full(shape, 0.5, dtype=torch.float32, device=image.device)
        padded[:, top : top + height, left : left + width, :] = image
        mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
        mask[top : top + height, left : left + width] = self._feather(
            height, width, (top, bottom, left, right), feathering
        )
        return padded, mask.unsqueeze(0)

    @staticmethod
    def _feather(height: int, width: int, sides: tuple[int, int, int, int], feathering: int) -> torch.Tensor:
        top, bottom, left, right = sides
        if not (feathering > 0 and feathering * 2 < height and feathering * 2 < width):
            return torch.zeros((height, width), dtype=torch.float32)
        rows = torch.arange(height, dtype=torch.float64).unsqueeze(1)
        cols = torch.arange(width, dtype=torch.float64).unsqueeze(0)
        far_h, far_w = torch.full_like(rows, height), torch.full_like(cols, width)
        distance = torch.minimum(
            torch.minimum(rows if top else far_h, height - rows if bottom else far_h),
            torch.minimum(cols if left else far_w, width - cols if right else far_w),
        )
        fade = (feathering - distance) / feathering
        return torch.where(distance < feathering, fade * fade, 0.0).to(torch.float32)


class ImageBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"
    CATEGORY = "image"

    def batch(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        """``image2`` is resized (bilinear, centre crop) to ``image1``'s size; a missing alpha channel is
        added as opaque."""
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = (F.pad(im, (0, channels - im.shape[-1]), value=1.0) for im in (image1, image2))
        if image1.shape[1:3] != image2.shape[1:3]:
            resized = common_upscale(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear", "center")
            image2 = resized.movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


class EmptyImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "width": _int(512, 1),
                "height": _int(512, 1),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        """``color`` is 0xRRGGBB."""
        check_pixels(width, height)
        rgb = torch.tensor([((color >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0)], dtype=torch.float32)
        return (rgb.expand(batch_size, height, width, 3).clone(),)


class ImageBlur:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "blur"
    CATEGORY = "image/postprocessing"

    def blur(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple[torch.Tensor]:
        kernel = gaussian_kernel(blur_radius * 2 + 1, sigma)
        return (_convolve(image, kernel, blur_radius, "blur_radius"),)


class ImageSharpen:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
                "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
                "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sharpen"
    CATEGORY = "image/postprocessing"

    def sharpen(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple[torch.Tensor]:
        """Unsharp kernel: the Gaussian scaled by ``-10 * alpha`` with the centre raised so it sums to 1."""
        kernel = gaussian_kernel(sharpen_radius * 2 + 1, sigma) * -(alpha * 10)
        kernel[sharpen_radius, sharpen_radius] = kernel[sharpen_radius, sharpen_radius] - kernel.sum() + 1.0
        return (_convolve(image, kernel, sharpen_radius, "sharpen_radius").clamp(0, 1),)


NODE_CLASS_MAPPINGS = {
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageInvert": ImageInvert,
    "ImageCrop": ImageCrop,
    "ImagePadForOutpaint": ImagePadForOutpaint,
    "ImageBatch": ImageBatch,
    "EmptyImage": EmptyImage,
    "ImageBlur": ImageBlur,
    "ImageSharpen": ImageSharpen,
}

# As ComfyUI: ImageBlur and ImageSharpen declare no display name, so they show under their class names.
NODE_DISPLAY_NAME_MAPPINGS = {
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "ImageInvert": "Invert Image",
    "ImageCrop": "Image Crop",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
    "ImageBatch": "Batch Images",
    "EmptyImage": "Empty Image",
}
