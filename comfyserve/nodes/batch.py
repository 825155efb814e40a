"""Rebatching: list-in, list-out nodes that regroup images or latents into batches of a chosen size."""

from __future__ import annotations

from typing import Any

import torch

_BATCH_SIZE = ("INT", {"default": 1, "min": 1, "max": 4096})


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class RebatchImages:
    """Every image of every incoming batch, in order, regrouped into batches of ``batch_size``."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",), "batch_size": _BATCH_SIZE}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_IS_LIST = (True,)
    INPUT_IS_LIST = True
    FUNCTION = "rebatch"
    CATEGORY = "image/batch"

    def rebatch(self, images: list[torch.Tensor], batch_size: list[int]) -> tuple[list[torch.Tensor]]:
        singles = [image[i : i + 1] for image in images for i in range(image.shape[0])]
        return ([torch.cat(group) for group in _chunks(singles, batch_size[0])],)


class RebatchLatents:
    """Every latent of every incoming batch, in order, regrouped into batches of ``batch_size``; a change of
    latent size starts a new batch. Each latent keeps its noise mask (all ones where it had none; a batch whose
    mask is all ones drops it) and its ``batch_index`` (its running position where it had none)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"latents": ("LATENT",), "batch_size": _BATCH_SIZE}}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_IS_LIST = (True,)
    INPUT_IS_LIST = True
    FUNCTION = "rebatch"
    CATEGORY = "latent/batch"

    def rebatch(self, latents: list[dict[str, Any]], batch_size: list[int]) -> tuple[list[dict[str, Any]]]:
        items: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        for latent in latents:
            samples = latent["samples"]
            count, height, width = samples.shape[0], samples.shape[-2], samples.shape[-1]
            mask = latent.get("noise_mask")
            if mask is None:
                mask = torch.ones((count, 1, height * 8, width * 8))
            mask = mask.reshape((-1, 1, *mask.shape[-2:]))
            mask = mask.repeat((count - 1) // mask.shape[0] + 1, 1, 1, 1)[:count]
            indices = latent.get("batch_index") or [len(items) + i for i in range(count)]
            items += [(samples[i : i + 1], mask[i : i + 1], indices[i]) for i in range(count)]
        runs: list[list[tuple[torch.Tensor, torch.Tensor, int]]] = []
        for item in items:
            if runs and runs[-1][-1][0].shape[-2:] == item[0].shape[-2:]:
                runs[-1].append(item)
            else:
                runs.append([item])
        batches = []
        for run in runs:
            for group in _chunks(run, batch_size[0]):
                batch: dict[str, Any] = {"samples": torch.cat([s for s, _, _ in group])}
                mask = torch.cat([m for _, m, _ in group])
                if mask.mean() != 1.0:
                    batch["noise_mask"] = mask
                batch["batch_index"] = [i for _, _, i in group]
                batches.append(batch)
        return (batches,)


NODE_CLASS_MAPPINGS = {"RebatchImages": RebatchImages, "RebatchLatents": RebatchLatents}
NODE_DISPLAY_NAME_MAPPINGS = {"RebatchImages": "Rebatch Images", "RebatchLatents": "Rebatch Latents"}
