"""ComfyUI's latent nodes: empty latents, latent upscaling, noise masks and inpainting-model conditioning.

A LATENT is ``{"samples": Tensor[B, 4, H/8, W/8]}`` (scaled as the UNet sees it), optionally with a
``noise_mask`` that limits sampling to a region (see ``comfyserve.models.handles``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from comfyserve.engine.context import check_pixels
from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import Autoencoder
from comfyserve.models.sampling.resize import CROP_METHODS, UPSCALE_METHODS, upscale
from comfyserve.nodes.image import MAX_RESOLUTION

LATENT_CHANNELS = 4
DOWNSCALE = 8


def _samples(latent: Any, name: str = "samples") -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
        raise NodeInputError(f"{name} must be a LATENT holding samples of shape [batch, channels, height, width]")
    return samples


def _mask(mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
        raise NodeInputError("mask must be a MASK tensor of shape [batch, height, width]")
    return mask


class EmptyLatentImage:
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
        return {
            "required": {
                "width": ("INT", {**side, "tooltip": "The width of the latent images in pixels."}),
                "height": ("INT", {**side, "tooltip": "The height of the latent images in pixels."}),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."},
                ),
            }
        }

    def generate(self, width: int, height: int, batch_size: int = 1) -> tuple[dict[str, torch.Tensor]]:
        """A size that is not a multiple of 8 rounds down, as ComfyUI's does (``step`` is not enforced)."""
        check_pixels(width, height)
        samples = torch.zeros([batch_size, LATENT_CHANNELS, height // DOWNSCALE, width // DOWNSCALE])
        return ({"samples": samples},)


class LatentUpscale:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (list(UPSCALE_METHODS),),
                "width": side,
                "height": side,
                "crop": (list(CROP_METHODS),),
            }
        }

    def upscale(
        self, samples: dict[str, Any], upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[dict[str, Any]]:
        """Width or height 0 keeps the aspect ratio from the other; each side is at least 64 pixels."""
        latent = _samples(samples)
        if width == 0 and height == 0:
            return (samples,)
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        check_pixels(width, height)
        out = dict(samples)
        out["samples"] = upscale(latent, width // DOWNSCALE, height // DOWNSCALE, upscale_method, crop)
        return (out,)


class LatentUpscaleBy:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (list(UPSCALE_METHODS),),
                "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    def upscale(self, samples: dict[str, Any], upscale_method: str, scale_by: float) -> tuple[dict[str, Any]]:
        latent = _samples(samples)
        width = round(latent.shape[-1] * scale_by)
        height = round(latent.shape[-2] * scale_by)
        if width < 1 or height < 1:
            raise NodeInputError(
                f"scale_by {scale_by} shrinks the {latent.shape[-1]}x{latent.shape[-2]} latent to nothing"
            )
        check_pixels(width * DOWNSCALE, height * DOWNSCALE)
        out = dict(samples)
        out["samples"] = upscale(latent, width, height, upscale_method, "disabled")
        return (out,)


class SetLatentNoiseMask:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    def set_mask(self, samples: dict[str, Any], mask: torch.Tensor) -> tuple[dict[str, Any]]:
        _samples(samples)
        mask = _mask(mask)
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


class InpaintModelConditioning:
    CATEGORY = "conditioning/inpaint"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "vae": ("VAE",),
                "pixels": ("IMAGE",),
                "mask": ("MASK",),
                "noise_mask": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Add a noise mask to the latent so sampling will only happen within the mask. "
                        "Might improve results or completely break things depending on the model.",
                    },
                ),
            }
        }

    def encode(
        self,
        positive: list[Any],
        negative: list[Any],
        vae: Autoencoder,
        pixels: torch.Tensor,
        mask: torch.Tensor,
        noise_mask: bool = True,
    ) -> tuple[list[Any], list[Any], dict[str, Any]]:
        """The image with the masked area set to grey is encoded for the model's extra input channels."""
        from comfyserve.models.vae import crop_to_multiple, encode_pixels

        if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
            raise NodeInputError("pixels must be an IMAGE tensor of shape [batch, height, width, channels]")
        mask = _mask(mask).reshape(-1, 1, mask.shape[-2], mask.shape[-1]).to(pixels.device, torch.float32)
        mask = F.interpolate(mask, size=(pixels.shape[1], pixels.shape[2]), mode="bilinear")
        pixels = crop_to_multiple(pixels, vae.downscale)
        mask = crop_to_multiple(mask.movedim(1, -1), vae.downscale).movedim(-1, 1)
        keep = (1.0 - mask.round()).squeeze(1).unsqueeze(-1)
        masked_pixels = pixels.clone()
        masked_pixels[..., :3] = (pixels[..., :3] - 0.5) * keep + 0.5
        concat_latent = encode_pixels(vae, masked_pixels)
        latent: dict[str, Any] = {"samples": encode_pixels(vae, pixels)}
        if noise_mask:
            latent["noise_mask"] = mask
        extras = {"concat_latent_image": concat_latent, "concat_mask": mask}
        outputs = [[[cond, {**options, **extras}] for cond, options in side] for side in (positive, negative)]
        return outputs[0], outputs[1], latent


NODE_CLASS_MAPPINGS = {
    "EmptyLatentImage": EmptyLatentImage,
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "InpaintModelConditioning": InpaintModelConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EmptyLatentImage": "Empty Latent Image",
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
}
