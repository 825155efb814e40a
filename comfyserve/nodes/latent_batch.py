"""ComfyUI's latent compositing and batch nodes (``nodes.py``): composite, blend, pick from and repeat a batch.

A LATENT is ``{"samples": [B, C, H, W], "noise_mask"?: [B, 1, H, W], "batch_index"?: list[int]}``; the
``batch_index`` list keeps each item's place in the seed's noise stream when a batch is split or repeated.
"""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.models.sampling.resize import repeat_to_batch, upscale
from comfyserve.nodes.image import MAX_RESOLUTION
from comfyserve.nodes.latent import DOWNSCALE, _samples


class LatentComposite:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        step8 = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "samples_to": ("LATENT",),
                "samples_from": ("LATENT",),
                "x": step8,
                "y": step8,
                "feather": step8,
            }
        }

    def composite(
        self, samples_to: dict[str, Any], samples_from: dict[str, Any], x: int, y: int, feather: int = 0
    ) -> tuple[dict[str, Any]]:
        """``samples_from`` pasted at pixel (x, y) (rounded down to the latent grid), cut at the destination's
        edges; ``feather`` fades its inner edges (those not on the destination's border) linearly. A position
        at or past the destination's edge leaves it unchanged."""
        target = _samples(samples_to, "samples_to")
        source = _samples(samples_from, "samples_from")
        x, y, feather = x // DOWNSCALE, y // DOWNSCALE, feather // DOWNSCALE
        out = dict(samples_to)
        result = target.clone()
        out["samples"] = result
        if y >= target.shape[2] or x >= target.shape[3]:
            return (out,)
        source = source[:, :, : target.shape[2] - y, : target.shape[3] - x]
        region = result[:, :, y : y + source.shape[2], x : x + source.shape[3]]
        if feather == 0:
            region[...] = source
            return (out,)
        mask = torch.ones_like(source)
        height, width = mask.shape[2], mask.shape[3]
        for t in range(feather):
            rate = (1.0 / feather) * (t + 1)
            if y != 0:
                mask[:, :, t : t + 1, :] *= rate
            if y + height < target.shape[2]:
                mask[:, :, height - 1 - t : height - t, :] *= rate
            if x != 0:
                mask[:, :, :, t : t + 1] *= rate
            if x + width < target.shape[3]:
                mask[:, :, :, width - 1 - t : width - t] *= rate
        region[...] = source * mask + region * (torch.ones_like(mask) - mask)
        return (out,)


class LatentBlend:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "blend"
    CATEGORY = "_for_testing"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        # ComfyUI declares the bounds as the integers 0 and 1 (the catalog shows them so).
        factor = ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01})
        return {"required": {"samples1": ("LATENT",), "samples2": ("LATENT",), "blend_factor": factor}}

    def blend(self, samples1: dict[str, Any], samples2: dict[str, Any], blend_factor: float) -> tuple[dict[str, Any]]:
        """``samples1 * factor + samples2 * (1 - factor)``; a ``samples2`` of another shape is first resized
        (bicubic, centre-cropped to the aspect ratio) to ``samples1``'s size."""
        first = _samples(samples1, "samples1")
        second = _samples(samples2, "samples2")
        if first.shape != second.shape:
            second = upscale(second, first.shape[3], first.shape[2], "bicubic", "center")
        out = dict(samples1)
        out["samples"] = first * blend_factor + second * (1 - blend_factor)
        return (out,)


class LatentFromBatch:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"
    CATEGORY = "latent/batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                "length": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    def frombatch(self, samples: dict[str, Any], batch_index: int, length: int) -> tuple[dict[str, Any]]:
        """``length`` items from ``batch_index`` (past the end: the last item), with their noise masks and
        ``batch_index`` entries, so each keeps the noise it would have had in the whole batch."""
        latent = _samples(samples)
        start = min(latent.shape[0] - 1, batch_index)
        count = min(latent.shape[0] - start, length)
        out = dict(samples)
        out["samples"] = latent[start : start + count].clone()
        masks = samples.get("noise_mask")
        if isinstance(masks, torch.Tensor):
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                if masks.shape[0] < latent.shape[0]:
                    masks = repeat_to_batch(masks, latent.shape[0])
                out["noise_mask"] = masks[start : start + count].clone()
        indices = samples.get("batch_index")
        out["batch_index"] = list(range(start, start + count)) if indices is None else indices[start : start + count]
        return (out,)


class RepeatLatentBatch:
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"
    CATEGORY = "latent/batch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    def repeat(self, samples: dict[str, Any], amount: int) -> tuple[dict[str, Any]]:
        """The batch ``amount`` times over; a per-item noise mask repeats with it, and each copy's
        ``batch_index`` entries move past the previous copy's range."""
        latent = _samples(samples)
        out = dict(samples)
        out["samples"] = latent.repeat((amount,) + (1,) * (latent.ndim - 1))
        masks = samples.get("noise_mask")
        if isinstance(masks, torch.Tensor) and masks.shape[0] > 1:
            out["noise_mask"] = masks.repeat((amount,) + (1,) * (masks.ndim - 1))
        indices = samples.get("batch_index")
        if indices:
            offset = max(indices) - min(indices) + 1
            out["batch_index"] = list(indices) + [x + i * offset for i in range(1, amount) for x in indices]
        return (out,)


NODE_CLASS_MAPPINGS = {
    "LatentComposite": LatentComposite,
    "LatentBlend": LatentBlend,
    "LatentFromBatch": LatentFromBatch,
    "RepeatLatentBatch": RepeatLatentBatch,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LatentComposite": "Latent Composite",
    "LatentBlend": "Latent Blend",
    "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch",
}
