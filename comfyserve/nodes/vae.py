"""ComfyUI's VAE nodes: images to latents and back, whole or tiled, and the inpainting encoder."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import Autoencoder
from comfyserve.models.vae import (
    crop_to_multiple,
    decode_latent,
    decode_latent_tiled,
    encode_pixels,
    encode_pixels_tiled,
)

Latent = dict[str, Any]
_TEMPORAL_SIZE = ("INT", {"default": 64, "min": 8, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs."})
_TEMPORAL_OVERLAP = ("INT", {"default": 8, "min": 4, "max": 4096, "step": 4, "tooltip": "Only used for video VAEs."})


def _samples(latent: Any) -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise NodeInputError("samples must be a LATENT (a dict holding a 'samples' tensor)")
    return samples


class VAEDecode:
    DESCRIPTION = "Decodes latent images back into pixel space images."
    CATEGORY = "latent"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    def decode(self, vae: Autoencoder, samples: Latent) -> tuple[torch.Tensor]:
        return (decode_latent(vae, _samples(samples)),)


class VAEDecodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "vae": ("VAE",),
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 32}),
                "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
                "temporal_size": _TEMPORAL_SIZE,
                "temporal_overlap": _TEMPORAL_OVERLAP,
            }
        }

    def decode(
        self,
        vae: Autoencoder,
        samples: Latent,
        tile_size: int,
        overlap: int = 64,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[torch.Tensor]:
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        return (decode_latent_tiled(vae, _samples(samples), tile_size, overlap),)


class VAEEncode:
    CATEGORY = "latent"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    def encode(self, vae: Autoencoder, pixels: torch.Tensor) -> tuple[Latent]:
        return ({"samples": encode_pixels(vae, pixels)},)


class VAEEncodeTiled:
    CATEGORY = "_for_testing"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "pixels": ("IMAGE",),
                "vae": ("VAE",),
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64}),
                "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
                "temporal_size": _TEMPORAL_SIZE,
                "temporal_overlap": _TEMPORAL_OVERLAP,
            }
        }

    def encode(
        self,
        vae: Autoencoder,
        pixels: torch.Tensor,
        tile_size: int,
        overlap: int,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[Latent]:
        return ({"samples": encode_pixels_tiled(vae, pixels, tile_size, overlap)},)


def _check_mask(mask: Any) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise NodeInputError("mask must be a MASK tensor of shape [batch, height, width]")
    return mask


class VAEEncodeForInpaint:
    CATEGORY = "latent/inpaint"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "pixels": ("IMAGE",),
                "vae": ("VAE",),
                "mask": ("MASK",),
                "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1}),
            }
        }

    def encode(
        self, vae: Autoencoder, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6
    ) -> tuple[Latent]:
        """Grey out the masked pixels (0.5), encode, and keep the grown mask as the latent's noise mask."""
        mask = _check_mask(mask)
        if pixels.ndim != 4:
            raise NodeInputError(f"pixels must be an IMAGE [batch, height, width, channels], got {list(pixels.shape)}")
        if mask.ndim == 3 and mask.shape[0] not in (1, pixels.shape[0]):
            raise NodeInputError(f"the mask batch ({mask.shape[0]}) does not match the image batch ({pixels.shape[0]})")
        step = vae.downscale
        mask = F.interpolate(
            mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(),
            size=(pixels.shape[1], pixels.shape[2]),
            mode="bilinear",
        )
        pixels = crop_to_multiple(pixels, step).clone()
        height, width = pixels.shape[1], pixels.shape[2]
        top, left = (mask.shape[2] % step) // 2, (mask.shape[3] % step) // 2
        mask = mask[:, :, top : top + height, left : left + width]
        if grow_mask_by == 0:
            grown = mask
        else:
            kernel = torch.ones((1, 1, grow_mask_by, grow_mask_by))
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = torch.clamp(F.conv2d(mask.round(), kernel, padding=padding), 0, 1)
        keep = (1.0 - mask.round()).squeeze(1)
        pixels[..., :3] = (pixels[..., :3] - 0.5) * keep.unsqueeze(-1) + 0.5
        latent = encode_pixels(vae, pixels)
        return ({"samples": latent, "noise_mask": grown[:, :, :height, :width].round()},)


NODE_CLASS_MAPPINGS = {
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "VAEDecodeTiled": VAEDecodeTiled,
    "VAEEncodeTiled": VAEEncodeTiled,
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "VAEDecodeTiled": "VAE Decode (Tiled)",
    "VAEEncodeTiled": "VAE Encode (Tiled)",
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
}
