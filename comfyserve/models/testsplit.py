"""Split test-model files (``make-test-models``): a checkpoint's parts as the separate files UNETLoader,
CLIPLoader and DualCLIPLoader load, in the layouts published ones use.

``split_checkpoint`` cuts a single-file checkpoint into its bare UNet (LDM keys), its text encoders (CLIP-L in
transformers' layout, CLIP-H / CLIP-G in OpenCLIP's, as the checkpoint stores them) and its VAE. The other
published layouts come from :func:`diffusers_unet` and :func:`transformers_clip`. ``split_requests`` tells
which part and family a split loader of a workflow asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from comfyserve.models import layout
from comfyserve.models.handles import ModelFamily

StateDict = dict[str, torch.Tensor]
UNET, CLIP_L, CLIP_H, CLIP_G = "unet", "clip_l", "clip_h", "clip_g"
PARTS = (UNET, CLIP_L, CLIP_H, CLIP_G)
_ENCODER_PREFIXES: dict[ModelFamily, tuple[tuple[str, str], ...]] = {
    ModelFamily.SD1: ((CLIP_L, layout.SD1_CLIP_PREFIX),),
    ModelFamily.SD1_INPAINT: ((CLIP_L, layout.SD1_CLIP_PREFIX),),
    ModelFamily.SD2: ((CLIP_H, layout.SD2_CLIP_PREFIX),),
    ModelFamily.SD2_V: ((CLIP_H, layout.SD2_CLIP_PREFIX),),
    ModelFamily.SDXL: ((CLIP_L, layout.XL_CLIP_L_PREFIX), (CLIP_G, layout.XL_CLIP_G_PREFIX)),
    ModelFamily.SDXL_REFINER: ((CLIP_G, layout.REFINER_CLIP_G_PREFIX),),
}
# The single text encoder CLIPLoader loads for a family told by a file's name, and the family it comes from.
_SINGLE_ENCODER: dict[ModelFamily, tuple[str, ModelFamily]] = {
    ModelFamily.SD1: (CLIP_L, ModelFamily.SD1),
    ModelFamily.SD1_INPAINT: (CLIP_L, ModelFamily.SD1),
    ModelFamily.SD2: (CLIP_H, ModelFamily.SD2_V),
    ModelFamily.SD2_V: (CLIP_H, ModelFamily.SD2_V),
    ModelFamily.SDXL: (CLIP_G, ModelFamily.SDXL_REFINER),
    ModelFamily.SDXL_REFINER: (CLIP_G, ModelFamily.SDXL_REFINER),
}
_G_MARKS = ("clip_g", "clip-g", "clipg", "bigg", "text_encoder_2", "open_clip", "openclip")


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def split_checkpoint(sd: Mapping[str, torch.Tensor], family: ModelFamily) -> dict[str, StateDict]:
    """The checkpoint's parts by name: ``unet`` (bare LDM keys), ``vae``, and its text encoders
    (``clip_l`` / ``clip_h`` / ``clip_g``) without their checkpoint prefixes."""
    parts = {UNET: _strip(sd, layout.UNET_PREFIX), "vae": _strip(sd, layout.VAE_PREFIX)}
    parts.update({part: _strip(sd, prefix) for part, prefix in _ENCODER_PREFIXES[family]})
    return parts


def diffusers_unet(unet: StateDict, family: ModelFamily) -> StateDict:
    """A bare LDM UNet in diffusers' ``UNet2DConditionModel`` layout (diffusers' ``unet/`` folder)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from comfyserve.models.configs import unet_config

    prefixed = {layout.UNET_PREFIX + k: v for k, v in unet.items()}
    converted: StateDict = convert_ldm_unet_checkpoint(prefixed, unet_config(family, unet))
    return converted


def transformers_clip(open_clip: StateDict) -> StateDict:
    """An OpenCLIP text tower in transformers' ``CLIPTextModelWithProjection`` layout (SDXL's
    ``text_encoder_2/``)."""
    from comfyserve.models.checkpoint import convert_text_encoder

    prefix = layout.XL_CLIP_G_PREFIX  # keeps the projection (SD2.x's prefix drops it)
    return convert_text_encoder({prefix + k: v for k, v in open_clip.items()}, prefix)


# Split loaders -> the inputs naming their files.
SPLIT_LOADERS: dict[str, tuple[str, ...]] = {
    "UNETLoader": ("unet_name",),
    "CLIPLoader": ("clip_name",),
    "DualCLIPLoader": ("clip_name1", "clip_name2"),
}


def _dual_parts(first: str, second: str) -> tuple[str, str]:
    """CLIP-L / CLIP-G for DualCLIPLoader's two names: a name marked as bigG is G, else by position."""
    marked = [any(mark in name.lower() for mark in _G_MARKS) for name in (first, second)]
    if marked == [True, False]:
        return CLIP_G, CLIP_L
    return CLIP_L, CLIP_G


def split_requests(
    class_type: str, inputs: Mapping[str, Any], family_from_name: Callable[[str], ModelFamily]
) -> list[tuple[str, str, str, ModelFamily]]:
    """``(folder, name, part, family)`` for each file a split loader names (names that are not strings are
    left out)."""
    names = [name for field in SPLIT_LOADERS[class_type] if isinstance(name := inputs.get(field), str)]
    if len(names) != len(SPLIT_LOADERS[class_type]):
        return []
    if class_type == "UNETLoader":
        return [("diffusion_models", names[0], UNET, family_from_name(names[0]))]
    if class_type == "CLIPLoader":
        return [("text_encoders", names[0], *_SINGLE_ENCODER[family_from_name(names[0])])]
    parts = _dual_parts(names[0], names[1])
    return [("text_encoders", name, part, ModelFamily.SDXL) for name, part in zip(names, parts, strict=True)]
