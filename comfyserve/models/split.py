"""Split model files: a diffusion model (UNet) alone and text encoders alone, as UNETLoader, CLIPLoader and
DualCLIPLoader load them (the VAE alone is :func:`checkpoint.load_vae`).

Layouts accepted (those published and loaded by ComfyUI 0.3.64):

- UNet: the original (LDM) keys ``input_blocks.*``, bare or under ``model.diffusion_model.``, or diffusers'
  ``UNet2DConditionModel`` keys (``down_blocks.*``). The family comes from the shapes as for a checkpoint
  without text encoders (:mod:`detect`): cross-attention width 768 -> SD1.x, 1024 -> SD2.x (v-prediction by
  ComfyUI's norm-bias test), 2048 with the SDXL size embedding -> SDXL, 1280 with it -> the SDXL refiner;
  other widths (test models) by the UNet's structure.
- Text encoder: transformers' ``CLIPTextModel`` keys (``text_model.*``, optionally ``text_projection.weight``)
  or an OpenCLIP tower (``transformer.resblocks.*``). Which CLIP it is follows ComfyUI's rule on the layer
  count: a 31st layer means CLIP-G (ViT-bigG), a 23rd CLIP-H (ViT-H), else CLIP-L. A file with fewer layers
  than the published encoder (diffusers' SD2.x ``text_encoder`` stores 23 of ViT-H's 24) counts CLIPSetLastLayer
  from the published depth, as ComfyUI does (it builds the whole encoder): SD2's default penultimate layer is
  then that file's last.

``fp8`` (UNETLoader's fp8 weight dtypes) rounds every UNet weight through that fp8 format as it is read, and
keeps and computes it in the policy's dtype: the values ComfyUI computes with when it stores fp8 weights and
casts them per layer (on any device; its "fast" fp8 matrix products on fp8-capable GPUs are not reproduced).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from comfyserve.models import configs, layout
from comfyserve.models.cache import model_cache
from comfyserve.models.checkpoint import build_text_encoder, build_unet, default_clip_layer
from comfyserve.models.detect import UnrecognisedCheckpoint, detect, top_level_prefixes
from comfyserve.models.device import policy
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import Cast, StateDict, read_state_dict
from comfyserve.models.handles import DiffusionModel, ModelFamily, TextEncoder
from comfyserve.models.memory import module_bytes
from comfyserve.models.prompt import END_TOKEN, clip_tokenizer
from comfyserve.models.text import ClipEncoder

_LDM_MARKER = "input_blocks.0.0.weight"
_DIFFUSERS_MARKER = "conv_in.weight"
_OPEN_CLIP_MARKER = "transformer.resblocks.0.ln_1.weight"
_HF_CLIP_MARKER = "text_model.embeddings.token_embedding.weight"
_EXTRA_TEXT_KEYS = ("logit_scale",)  # stored by some exporters, used by no text encoder


class ClipKind(StrEnum):
    """The CLIP text encoders of SD1.x (L), SD2.x (H) and SDXL (L + G; the refiner G alone)."""

    L = "CLIP-L"
    H = "CLIP-H"
    G = "CLIP-G"


# (the family whose bundled config describes it, config component, pad token): CLIP-L pads with the end
# token, the OpenCLIP towers with 0.
_PUBLISHED_LAYERS = {ClipKind.L: 12, ClipKind.H: 24, ClipKind.G: 32}
_KIND_CONFIG: dict[ClipKind, tuple[ModelFamily, str, int]] = {
    ClipKind.L: (ModelFamily.SD1, "text_encoder", END_TOKEN),
    ClipKind.H: (ModelFamily.SD2, "text_encoder", 0),
    ClipKind.G: (ModelFamily.SDXL, "text_encoder_2", 0),
}


# -- UNet ---------------------------------------------------------------------------------------------------


def _count(sd: StateDict, pattern: str) -> int:
    return configs.count_indices(sd, pattern)


def _diffusers_dims(sd: StateDict) -> layout.UNetDims:
    """The structure of a diffusers-layout UNet, read off its shapes."""
    levels = _count(sd, r"down_blocks\.(\d+)\.")
    depths = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") for i in range(levels)]
    to_k = next(v for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    proj_in = next(v for k, v in sd.items() if k.endswith(".proj_in.weight"))
    adm = sd.get("add_embedding.linear_1.weight")
    return layout.UNetDims(
        channels=tuple(int(sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(levels)),
        depth=tuple(depths),
        mid_depth=_count(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."),
        context=int(to_k.shape[1]),
        linear_proj=proj_in.ndim == 2,
        in_channels=int(sd[_DIFFUSERS_MARKER].shape[1]),
        adm=0 if adm is None else int(adm.shape[1]),
        layers=_count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
    )


def _provisional_family(dims: layout.UNetDims) -> ModelFamily:
    """The family whose bundled config names the diffusers modules of a UNet of these dims (SDXL's size
    embedding, SD1's attention heads); :func:`detect` decides the family itself afterwards."""
    if dims.adm:
        return ModelFamily.SDXL_REFINER if dims.context == 1280 else ModelFamily.SDXL
    return ModelFamily.SD2 if dims.context == 1024 else ModelFamily.SD1


def _from_diffusers(sd: StateDict, source: str) -> StateDict:
    """A diffusers-layout UNet's tensors under their LDM names (``model.diffusion_model.*``): the LDM layout of
    the same structure is converted on the meta device, which names each LDM key's diffusers key."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    try:
        dims = _diffusers_dims(sd)
        shapes = layout.unet_shapes(dims)
    except (KeyError, StopIteration, IndexError) as exc:
        raise ModelFileError(f"model file {source!r}: a diffusers UNet without the expected {exc} weights") from None
    meta = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    config = configs.unet_config(_provisional_family(dims), {k[len(layout.UNET_PREFIX) :]: t for k, t in meta.items()})
    diffusers_name = {id(t): k for k, t in convert_ldm_unet_checkpoint(meta, config).items()}
    names = {ldm: diffusers_name[id(t)] for ldm, t in meta.items() if id(t) in diffusers_name}
    missing = sorted(set(names.values()) - set(sd))
    unexpected = sorted(k for k in set(sd) - set(names.values()) if k not in ("v_pred", "ztsnr"))
    if missing or unexpected or len(names) != len(meta):
        example = (missing or unexpected or ["(unmapped LDM keys)"])[0]
        raise ModelFileError(
            f"model file {source!r}: a diffusers UNet whose weights do not fit an SD1.x/SD2.x/SDXL UNet "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {example})"
        )
    converted = {ldm: sd.pop(key) for ldm, key in names.items()}
    return {**converted, **sd}


def unet_ldm_state_dict(sd: StateDict, source: str) -> StateDict:
    """A diffusion-model file's UNet under ``model.diffusion_model.`` (LDM names), whatever its layout;
    ``v_pred`` / ``ztsnr`` markers are kept as they are."""
    if any(k.startswith(layout.UNET_PREFIX) for k in sd):
        return sd
    if _LDM_MARKER in sd:
        return {(k if k in ("v_pred", "ztsnr") else layout.UNET_PREFIX + k): v for k, v in sd.items()}
    if _DIFFUSERS_MARKER in sd and "down_blocks.0.resnets.0.conv1.weight" in sd:
        return _from_diffusers(sd, source)
    raise ModelFileError(
        f"model file {source!r} is not an SD1.x/SD2.x/SDXL diffusion model (no input_blocks.* or down_blocks.* "
        f"UNet weights; top-level prefixes: {top_level_prefixes(sd)})"
    )


def build_diffusion_model(sd: StateDict, source: str) -> DiffusionModel:
    """MODEL from a diffusion-model file's tensors (any accepted layout), taken out of ``sd``."""
    ldm = unet_ldm_state_dict(sd, source)
    try:
        found = detect(ldm, any_width=True)
    except UnrecognisedCheckpoint as exc:
        raise ModelFileError(f"model file {source!r}: {exc}") from None
    unet, ldm_names = build_unet(found.family, ldm, source)
    return DiffusionModel(
        unet=unet,
        family=found.family,
        sampling=found.sampling,
        in_channels=found.in_channels,
        source=source,
        extra={"ldm_names": ldm_names},
    )


def _unet_cast(dtype: torch.dtype, fp8: torch.dtype | None) -> Cast:
    def cast(_key: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point() or tensor.numel() == 0:
            return tensor
        return (tensor.to(fp8) if fp8 is not None else tensor).to(dtype)

    return cast


def load_diffusion_model(path: Path, fp8: torch.dtype | None = None) -> DiffusionModel:
    """MODEL of a diffusion-model file, its weights rounded through ``fp8`` when given; the same unchanged
    file (and rounding) returns the same object."""

    def load(p: Path) -> tuple[DiffusionModel, int]:
        model = build_diffusion_model(read_state_dict(p, _unet_cast(policy().model_dtype, fp8)), p.name)
        return model, module_bytes(model.unet)

    return model_cache().get_or_load(f"unet/{fp8 or 'default'}", path, load)


# -- text encoders -----------------------------------------------------------------------------------------


def _kind(layers: int) -> ClipKind:
    return ClipKind.G if layers > 30 else ClipKind.H if layers > 22 else ClipKind.L


def _text_layout(sd: StateDict, source: str) -> tuple[ClipKind, str]:
    """Which CLIP the file holds and the checkpoint prefix its layout converts from."""
    for key in _EXTRA_TEXT_KEYS:
        sd.pop(key, None)
    if _OPEN_CLIP_MARKER in sd:  # converted as the checkpoint of its family stores it (SD2.x: no projection)
        kind = _kind(_count(sd, r"transformer\.resblocks\.(\d+)\."))
        return kind, layout.XL_CLIP_G_PREFIX if kind is ClipKind.G else layout.SD2_CLIP_PREFIX
    if _HF_CLIP_MARKER in sd:
        if "text_projection" in sd:  # ComfyUI's older CLIPSave files: the OpenCLIP orientation
            sd["text_projection.weight"] = sd.pop("text_projection").T.contiguous()
        return _kind(_count(sd, r"text_model\.encoder\.layers\.(\d+)\.")), layout.SD1_CLIP_PREFIX
    raise ModelFileError(
        f"model file {source!r} is not a CLIP text encoder (no text_model.* or transformer.resblocks.* weights; "
        f"top-level prefixes: {top_level_prefixes(sd)})"
    )


def build_clip_module(sd: StateDict, source: str) -> tuple[ClipKind, torch.nn.Module]:
    """The text encoder of a text-encoder file (transformers or OpenCLIP layout) and which CLIP it is."""
    kind, prefix = _text_layout(sd, source)
    family, component, _ = _KIND_CONFIG[kind]
    prefixed = {prefix + k: v for k, v in sd.items()}
    sd.clear()
    return kind, build_text_encoder(family, prefixed, prefix, component, source)


def load_clip_module(path: Path) -> tuple[ClipKind, torch.nn.Module]:
    """:func:`build_clip_module` of a file, kept in the model cache."""

    def load(p: Path) -> tuple[tuple[ClipKind, torch.nn.Module], int]:
        kind, module = build_clip_module(read_state_dict(p), p.name)
        return (kind, module), module_bytes(module)

    return model_cache().get_or_load("text_encoder", path, load)


def clip_family(kinds: Sequence[ClipKind]) -> ModelFamily:
    """The family a set of text encoders serves: L -> SD1.x, H -> SD2.x, G -> the SDXL refiner, L + G -> SDXL."""
    found = sorted(kinds)
    families = {
        (ClipKind.L,): ModelFamily.SD1,
        (ClipKind.H,): ModelFamily.SD2,
        (ClipKind.G,): ModelFamily.SDXL_REFINER,
        (ClipKind.G, ClipKind.L): ModelFamily.SDXL,
    }
    family = families.get(tuple(found))
    if family is None:
        raise ModelFileError(f"no supported model uses the text encoders {' + '.join(found)}")
    return family


def _layers(module: Any) -> int:
    return int(module.config.num_hidden_layers)


def text_encoder(encoders: Sequence[tuple[ClipKind, torch.nn.Module]], source: str) -> TextEncoder:
    """CLIP of loaded text encoders (SDXL's CLIP-L first, whatever order they were given in)."""
    family = clip_family([kind for kind, _ in encoders])
    ordered = sorted(encoders, key=lambda entry: entry[0] is ClipKind.G)
    clips = tuple(
        ClipEncoder(
            module,
            _KIND_CONFIG[kind][2],
            final_norm=not family.is_xl,
            missing_layers=max(0, _PUBLISHED_LAYERS[kind] - _layers(module)),
        )
        for kind, module in ordered
    )
    return TextEncoder(
        family=family,
        tokenizers=tuple(clip_tokenizer() for _ in clips),
        encoders=clips,
        stop_at_layer=default_clip_layer(family),
        source=source,
    )


def load_text_encoder(paths: Sequence[Path]) -> TextEncoder:
    """CLIP of one text-encoder file (SD1.x, SD2.x, SDXL refiner) or two (SDXL)."""
    return text_encoder([load_clip_module(p) for p in paths], " + ".join(p.name for p in paths))
