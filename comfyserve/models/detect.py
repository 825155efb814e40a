"""Tell a checkpoint's family from its keys and shapes, without building anything.

Rules (the facts ComfyUI's ``model_detection.py`` / ``supported_models.py`` and diffusers' single-file
``infer_diffusers_model_type`` rely on):

- The UNet lives under ``model.diffusion_model.``; ``label_emb.0.0`` (an ADM input) only exists in SDXL.
- The text-encoder layout names the family: ``cond_stage_model.transformer.`` (CLIP-L) is SD1.x,
  ``cond_stage_model.model.`` (OpenCLIP ViT-H) is SD2.x, ``conditioner.embedders.0.transformer.`` plus
  ``conditioner.embedders.1.model.`` is SDXL base and ``conditioner.embedders.0.model.`` alone the refiner.
  A UNet without a text encoder falls back to its cross-attention width (768, 1024, 2048, 1280); a split UNet
  file (``any_width``) of other widths (a test model) to its structure: the SDXL size embedding with three
  levels is SDXL base, with four the refiner; linear transformer projections are SD2.x, convolutions SD1.x.
  The UNet's cross-attention width must equal the encoders' width (their sum for SDXL base).
- ``input_blocks.0.0.weight`` with 9 input channels is an inpainting model (``SD1_INPAINT`` for SD1.x; an
  SD2.x or SDXL inpainting model keeps its family with ``in_channels`` 9, and SD2 inpainting is epsilon).
- Prediction: a ``v_pred`` key means v-prediction (``ztsnr`` adds zero terminal SNR), as ComfyUI reads it.
  Otherwise SD2.x (4 input channels) is v-prediction when the standard deviation of
  ``output_blocks.11.1.transformer_blocks.0.norm1.bias`` exceeds 0.09 (ComfyUI's test: the 768-v models
  trained that bias far from zero); diffusers instead assumes v unless ``global_step == 875000``. Everything
  else is epsilon-prediction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import ModelFamily, SamplingSettings
from comfyserve.models.layout import (
    REFINER_CLIP_G_PREFIX,
    SD1_CLIP_PREFIX,
    SD2_CLIP_PREFIX,
    UNET_PREFIX,
    XL_CLIP_G_PREFIX,
    XL_CLIP_L_PREFIX,
)

V_PRED_NORM_KEY = UNET_PREFIX + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
V_PRED_STD_THRESHOLD = 0.09
_CONTEXT_FALLBACK = {
    768: ModelFamily.SD1,
    1024: ModelFamily.SD2,
    2048: ModelFamily.SDXL,
    1280: ModelFamily.SDXL_REFINER,
}


class UnrecognisedCheckpoint(ModelFileError):
    """The file is not a checkpoint of a family we support; the message says what was found."""


@dataclass(frozen=True)
class Detection:
    family: ModelFamily
    sampling: SamplingSettings
    in_channels: int
    context_dim: int


def top_level_prefixes(keys: Mapping[str, Any], limit: int = 8) -> str:
    """The most common first two key components, for error messages (``"first_stage_model.encoder" ...``)."""
    counts = Counter(".".join(k.split(".")[:2]) for k in keys)
    return ", ".join(prefix for prefix, _ in counts.most_common(limit)) or "none (the file holds no tensors)"


def _context_dim(sd: Mapping[str, Any]) -> int:
    for key, value in sd.items():
        if key.startswith(UNET_PREFIX) and key.endswith("attn2.to_k.weight"):
            return int(value.shape[1])
    raise UnrecognisedCheckpoint("unrecognised checkpoint: its UNet has no cross-attention (attn2.to_k) weights")


def _width(sd: Mapping[str, Any], key: str) -> int:
    return int(sd[key].shape[-1])


def _family_from_text_encoders(sd: Mapping[str, Any], has_adm: bool) -> tuple[ModelFamily, int] | None:
    """The family and the text width the UNet must attend to, from the text-encoder layout."""
    token_l = "text_model.embeddings.token_embedding.weight"
    token_g = "token_embedding.weight"
    if SD1_CLIP_PREFIX + token_l in sd:
        return ModelFamily.SD1, _width(sd, SD1_CLIP_PREFIX + token_l)
    if SD2_CLIP_PREFIX + token_g in sd:
        return ModelFamily.SD2, _width(sd, SD2_CLIP_PREFIX + token_g)
    if XL_CLIP_L_PREFIX + token_l in sd and XL_CLIP_G_PREFIX + token_g in sd and has_adm:
        return ModelFamily.SDXL, _width(sd, XL_CLIP_L_PREFIX + token_l) + _width(sd, XL_CLIP_G_PREFIX + token_g)
    if REFINER_CLIP_G_PREFIX + token_g in sd and has_adm:
        return ModelFamily.SDXL_REFINER, _width(sd, REFINER_CLIP_G_PREFIX + token_g)
    return None


def _structural_family(sd: Mapping[str, Any], has_adm: bool) -> ModelFamily:
    levels = 1 + sum(1 for k in sd if k.startswith(UNET_PREFIX + "input_blocks.") and k.endswith(".0.op.weight"))
    if has_adm:
        return ModelFamily.SDXL_REFINER if levels == 4 else ModelFamily.SDXL
    proj_in = next((v for k, v in sd.items() if k.startswith(UNET_PREFIX) and k.endswith(".proj_in.weight")), None)
    return ModelFamily.SD2 if proj_in is not None and proj_in.ndim == 2 else ModelFamily.SD1


def _prediction(sd: Mapping[str, Any], family: ModelFamily, in_channels: int) -> SamplingSettings:
    if "v_pred" in sd:
        return SamplingSettings(prediction="v_prediction", zsnr="ztsnr" in sd)
    norm = sd.get(V_PRED_NORM_KEY) if family is ModelFamily.SD2 and in_channels == 4 else None
    if norm is not None and float(norm.float().std(unbiased=False)) > V_PRED_STD_THRESHOLD:
        return SamplingSettings(prediction="v_prediction")
    return SamplingSettings()


def detect(sd: Mapping[str, Any], any_width: bool = False) -> Detection:
    """The family, prediction type, UNet input channels and context width of a loaded state dict; with
    ``any_width`` a bare UNet of unpublished widths is told by its structure."""
    conv_in = sd.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if conv_in is None:
        raise UnrecognisedCheckpoint(
            f"unrecognised checkpoint: no UNet keys ({UNET_PREFIX}*) found; top-level prefixes: "
            f"{top_level_prefixes(sd)}"
        )
    in_channels = int(conv_in.shape[1])
    context = _context_dim(sd)
    has_adm = UNET_PREFIX + "label_emb.0.0.weight" in sd
    found = _family_from_text_encoders(sd, has_adm)
    if found is None:
        family = _CONTEXT_FALLBACK.get(context)
        if family is None and any_width:
            family = _structural_family(sd, has_adm)
        if family is None or family.is_xl != has_adm:
            raise UnrecognisedCheckpoint(
                f"unrecognised checkpoint: a UNet with cross-attention width {context} "
                f"{'and' if has_adm else 'without'} an SDXL size embedding, and no known text encoder "
                f"(top-level prefixes: {top_level_prefixes(sd)})"
            )
    else:
        family, text_width = found
        if text_width != context:
            raise UnrecognisedCheckpoint(
                f"unrecognised checkpoint: its {family.value} text encoders are {text_width} wide but its UNet "
                f"attends to {context}"
            )
    if in_channels not in (4, 9):
        raise UnrecognisedCheckpoint(
            f"unsupported checkpoint: a {family.value} UNet with {in_channels} input channels (4 or 9 expected)"
        )
    sampling = _prediction(sd, family, in_channels)
    if in_channels == 9 and family is ModelFamily.SD1:
        family = ModelFamily.SD1_INPAINT
    elif family is ModelFamily.SD2 and sampling.prediction == "v_prediction":
        family = ModelFamily.SD2_V
    return Detection(family, sampling, in_channels, context)
