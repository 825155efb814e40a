"""CONDITIONING entries turned into UNet inputs, once per sampling run (ComfyUI's ``encode_model_conds``).

Each entry becomes a :class:`PreparedCond`: the text context, SDXL's pooled text embedding and size
``time_ids``, an inpainting model's extra input channels (mask, masked-image latent), its strength and the
sigma range in which it applies (``ConditioningSetTimestepRange``), and its ControlNets (:mod:`control`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel, ModelFamily
from comfyserve.models.sampling.control import ControlPreparer, PreparedControl
from comfyserve.models.sampling.resize import repeat_to_batch, resize_to_batch, upscale
from comfyserve.models.sampling.schedule import DiscreteSchedule

# SD1.x/2.x latents of a mid-grey image: the masked image an inpainting model sees when given no mask.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
REFINER_AESTHETIC_SCORE = {"positive": 6.0, "negative": 2.5}


@dataclass
class PreparedCond:
    """One conditioning entry on the sampling device, already repeated to the latent batch."""

    context: torch.Tensor
    strength: float
    sigma_start: float
    sigma_end: float
    added: dict[str, torch.Tensor] | None
    concat: torch.Tensor | None
    control: PreparedControl | None = None

    def active(self, sigma: float) -> bool:
        return self.sigma_end <= sigma <= self.sigma_start

    def batch_key(self) -> tuple[Any, ...]:
        """Entries with equal keys can share one UNet call."""
        added = tuple((k, v.shape) for k, v in self.added.items()) if self.added else ()
        concat = self.concat.shape if self.concat is not None else None
        return (self.context.shape, added, concat, id(self.control))


@dataclass
class SamplingInputs:
    """What conditioning preparation needs to know about the run: the latent, its mask, where to put tensors."""

    latent: torch.Tensor
    denoise_mask: torch.Tensor | None
    device: torch.device
    dtype: torch.dtype
    controls: ControlPreparer = field(default_factory=ControlPreparer)


def _entry(entry: Any, side: str, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
    if (
        not isinstance(entry, list | tuple)
        or len(entry) != 2
        or not isinstance(entry[0], torch.Tensor)
        or not isinstance(entry[1], dict)
    ):
        raise NodeInputError(f"{side} conditioning entry {index} is not a [tensor, dict] pair")
    if entry[0].ndim != 3:
        raise NodeInputError(
            f"{side} conditioning entry {index} has shape {list(entry[0].shape)}, expected [batch, tokens, dim]"
        )
    return entry[0], entry[1]


def _check_context_dim(model: DiffusionModel, context: torch.Tensor, side: str) -> None:
    expected = getattr(getattr(model.unet, "config", None), "cross_attention_dim", None)
    if isinstance(expected, int) and context.shape[-1] != expected:
        raise NodeInputError(
            f"{side} conditioning has embedding size {context.shape[-1]} but this model expects {expected}: "
            "encode the prompt with the CLIP of the same checkpoint"
        )


def _sdxl_added(
    model: DiffusionModel, extras: dict[str, Any], side: str, inputs: SamplingInputs
) -> dict[str, torch.Tensor]:
    pooled = extras.get("pooled_output")
    if not isinstance(pooled, torch.Tensor):
        raise NodeInputError(f"{side} conditioning has no pooled_output, which SDXL models need")
    height = extras.get("height", inputs.latent.shape[2] * 8)
    width = extras.get("width", inputs.latent.shape[3] * 8)
    sizes = [height, width, extras.get("crop_h", 0), extras.get("crop_w", 0)]
    if model.family == ModelFamily.SDXL_REFINER:
        prompt_type = "negative" if extras.get("prompt_type", side) == "negative" else "positive"
        sizes.append(extras.get("aesthetic_score", REFINER_AESTHETIC_SCORE[prompt_type]))
    else:
        sizes += [extras.get("target_height", height), extras.get("target_width", width)]
    batch = inputs.latent.shape[0]
    time_ids = torch.tensor([sizes], dtype=torch.float32).repeat(batch, 1)
    return {
        "text_embeds": repeat_to_batch(pooled, batch).to(inputs.device, inputs.dtype),
        "time_ids": time_ids.to(inputs.device, inputs.dtype),
    }


def _fit_spatial(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if tensor.shape[-2:] != like.shape[-2:]:
        tensor = upscale(tensor, like.shape[-1], like.shape[-2], "bilinear", "center")
    return tensor


def _inpaint_concat(extras: dict[str, Any], inputs: SamplingInputs) -> torch.Tensor:
    """Mask and masked-image latent for a 9-channel inpainting UNet (ComfyUI's ``concat_cond``)."""
    latent = inputs.latent
    batch = latent.shape[0]
    mask = extras.get("concat_mask", inputs.denoise_mask)
    if mask is None:
        blank = torch.tensor(BLANK_INPAINT_LATENT, device=inputs.device).reshape(1, -1, 1, 1)
        ones = torch.ones_like(latent[:, :1])
        return torch.cat([ones, blank.expand(batch, -1, latent.shape[2], latent.shape[3])], dim=1)
    image = extras.get("concat_latent_image", latent).to(inputs.device, torch.float32)
    image = _fit_spatial(image, latent)
    channels = latent.shape[1]
    if image.shape[1] >= channels:
        image = image[:, :channels]
    else:
        image = torch.cat([image, torch.zeros_like(latent)[:, image.shape[1] :]], dim=1)
    mask = mask.to(inputs.device, torch.float32)
    if mask.ndim == latent.ndim:
        mask = mask[:, :1]
    mask = _fit_spatial(mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]), latent)
    return torch.cat([resize_to_batch(mask.round(), batch), resize_to_batch(image, batch)], dim=1)


def prepare_conds(
    model: DiffusionModel,
    schedule: DiscreteSchedule,
    conditioning: Any,
    side: str,
    inputs: SamplingInputs,
) -> list[PreparedCond]:
    """``conditioning`` (``side`` is "positive" or "negative") ready for the UNet."""
    if not isinstance(conditioning, list | tuple):
        raise NodeInputError(f"{side} is not a CONDITIONING list")
    batch = inputs.latent.shape[0]
    prepared = []
    for index, entry in enumerate(conditioning):
        context, extras = _entry(entry, side, index)
        _check_context_dim(model, context, side)
        prepared.append(
            PreparedCond(
                context=repeat_to_batch(context, batch).to(inputs.device, inputs.dtype),
                strength=float(extras.get("strength", 1.0)),
                sigma_start=schedule.percent_to_sigma(extras.get("start_percent", 0.0)),
                sigma_end=schedule.percent_to_sigma(extras.get("end_percent", 1.0)),
                added=_sdxl_added(model, extras, side, inputs) if model.family.is_xl else None,
                concat=_inpaint_concat(extras, inputs) if model.in_channels > model.latent_channels else None,
                control=inputs.controls.prepare(model, schedule, extras.get("control"), inputs.latent, inputs.dtype),
            )
        )
    return prepared
