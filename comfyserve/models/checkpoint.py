"""Single-file checkpoints -> diffusers / transformers modules, converted with diffusers' own single-file code.

``load_checkpoint(path)`` returns ComfyUI's MODEL, CLIP and VAE for a ``.safetensors``, ``.ckpt`` or ``.pth``
file (pickles are read with ``torch.load(weights_only=True)``), kept in the process-wide model cache.
Modules are built on the host in the policy's dtype and moved to the device when used (:mod:`memory`).
diffusers and transformers are imported when a file is first loaded, not with this module: node packs import it,
and workers that never load a model should start without them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch

from comfyserve.models import configs, layout
from comfyserve.models.cache import model_cache
from comfyserve.models.detect import detect
from comfyserve.models.device import policy
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import Cast, StateDict, read_state_dict
from comfyserve.models.handles import Autoencoder, DiffusionModel, ModelFamily, TextEncoder
from comfyserve.models.memory import module_bytes
from comfyserve.models.prompt import END_TOKEN, clip_tokenizer
from comfyserve.models.text import ClipEncoder

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, UNet2DConditionModel

_IGNORED_KEYS = ("position_ids",)  # a buffer some files store and transformers recomputes


def _no_init_weights() -> AbstractContextManager[None]:
    """transformers' context that skips random initialisation of modules about to receive loaded weights."""
    from transformers.initialization import no_init_weights

    return no_init_weights()


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _take(sd: StateDict, prefix: str) -> StateDict:
    """The tensors under ``prefix`` (keys kept whole), taken out of ``sd``: once a part is built from them, no
    stored copy outlives its conversion (ComfyUI's own loader keeps the whole file mapped until the end)."""
    return {k: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}


def _load_strict(module: torch.nn.Module, weights: StateDict, what: str, source: str, dtype: torch.dtype) -> None:
    """Load ``weights`` (converted to ``dtype``) into ``module``, which must want exactly these keys and shapes.
    ``weights`` is emptied tensor by tensor as each is converted, so a stored tensor no one else holds is freed
    as its converted copy is made: an fp16 SDXL UNet loads into fp32 without both copies resident at once."""
    for key in [k for k in weights if k.endswith(_IGNORED_KEYS)]:
        del weights[key]
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        detail = "; ".join(
            f"{len(keys)} {kind}, e.g. {keys[0]}"
            for kind, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise ModelFileError(f"model file {source!r}: its {what} weights do not fit the expected layout ({detail})")
    converted = {}
    while weights:
        key, stored = weights.popitem()
        converted[key] = stored.to(dtype)
        del stored
    try:
        module.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise ModelFileError(f"model file {source!r}: its {what} weights have unexpected shapes ({first})") from exc
    module.requires_grad_(False)
    module.eval()


def build_unet(family: ModelFamily, sd: StateDict, source: str) -> tuple[UNet2DConditionModel, dict[str, str]]:
    """The UNet and a map from its LDM parameter names to diffusers' (LoRA files may use either), from the
    tensors it takes out of ``sd``."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    stored = _take(sd, layout.UNET_PREFIX)
    config = configs.unet_config(family, _strip(stored, layout.UNET_PREFIX))
    converted = convert_ldm_unet_checkpoint(stored, config)
    by_tensor = {id(v): k for k, v in converted.items()}
    ldm_names = {k[len(layout.UNET_PREFIX) :]: by_tensor[id(v)] for k, v in stored.items() if id(v) in by_tensor}
    del stored
    with _no_init_weights():
        unet = UNet2DConditionModel.from_config(config)
    _load_strict(unet, converted, "UNet", source, policy().model_dtype)
    return unet, ldm_names


def build_vae(family: ModelFamily, sd: StateDict, source: str) -> AutoencoderKL:
    """An AutoencoderKL from LDM VAE keys: those under ``first_stage_model.``, taken out of ``sd``, else the
    whole of ``sd`` (a standalone VAE file)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    bare = _strip(_take(sd, layout.VAE_PREFIX), layout.VAE_PREFIX) or sd
    config = configs.vae_config(family, bare)
    with _no_init_weights():
        vae = AutoencoderKL.from_config(config)
    _load_strict(vae, convert_ldm_vae_checkpoint(bare, config), "VAE", source, policy().vae_dtype)
    return vae


def _convert_open_clip(sd: StateDict, prefix: str) -> StateDict:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    width = int(sd[prefix + "token_embedding.weight"].shape[1])
    stub = SimpleNamespace(config=SimpleNamespace(hidden_size=width))
    converted: StateDict = convert_open_clip_checkpoint(stub, sd, prefix=prefix)
    # diffusers drops SD2's last layer (it builds a 23-layer encoder); ComfyUI keeps it for CLIPSetLastLayer(-1).
    layers = configs.count_indices(sd, re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
    for index in range(layers):
        if f"text_model.encoder.layers.{index}.mlp.fc1.weight" in converted:
            continue
        block = f"{prefix}transformer.resblocks.{index}."
        single = {f"{prefix}transformer.resblocks.0.{k[len(block) :]}": v for k, v in sd.items() if k.startswith(block)}
        for key, value in convert_open_clip_checkpoint(stub, single, prefix=prefix).items():
            converted[key.replace("encoder.layers.0.", f"encoder.layers.{index}.")] = value
    return converted


def convert_text_encoder(sd: StateDict, prefix: str) -> StateDict:
    """transformers keys (``text_model.*``, ``text_projection.weight``) of the text encoder under ``prefix``."""
    if prefix.endswith("transformer."):
        from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

        return convert_ldm_clip_checkpoint(sd)
    return _convert_open_clip(sd, prefix)


def build_text_encoder(family: ModelFamily, sd: StateDict, prefix: str, component: str, source: str) -> torch.nn.Module:
    """One CLIP text encoder from the tensors under ``prefix``, taken out of ``sd``: CLIP-L in transformers
    layout, or an OpenCLIP tower (``model.`` prefixes)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    converted = convert_text_encoder(_take(sd, prefix), prefix)
    config = CLIPTextConfig(**configs.text_config(family, component, converted))
    cls = CLIPTextModelWithProjection if "text_projection.weight" in converted else CLIPTextModel
    with _no_init_weights():
        encoder = cls(config)
    if "text_model.embeddings.token_embedding.weight" not in encoder.state_dict():
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    if cls is CLIPTextModel:
        converted.pop("text_projection.weight", None)
    _load_strict(encoder, converted, f"{component} text encoder", source, policy().text_dtype)
    return encoder


_ENCODERS: dict[ModelFamily, tuple[tuple[str, str, int], ...]] = {
    # (key prefix, config component, pad token): CLIP-L pads with the end token, OpenCLIP with 0.
    ModelFamily.SD1: ((layout.SD1_CLIP_PREFIX, "text_encoder", END_TOKEN),),
    ModelFamily.SD2: ((layout.SD2_CLIP_PREFIX, "text_encoder", 0),),
    ModelFamily.SDXL: (
        (layout.XL_CLIP_L_PREFIX, "text_encoder", END_TOKEN),
        (layout.XL_CLIP_G_PREFIX, "text_encoder_2", 0),
    ),
    ModelFamily.SDXL_REFINER: ((layout.REFINER_CLIP_G_PREFIX, "text_encoder_2", 0),),
}
_ENCODERS[ModelFamily.SD1_INPAINT] = _ENCODERS[ModelFamily.SD1]
_ENCODERS[ModelFamily.SD2_V] = _ENCODERS[ModelFamily.SD2]


def default_clip_layer(family: ModelFamily) -> int:
    """ComfyUI's default: SD1 encodes with the last layer, SD2 and SDXL with the penultimate one."""
    return -1 if family in (ModelFamily.SD1, ModelFamily.SD1_INPAINT) else -2


def build_checkpoint(sd: StateDict, source: str) -> tuple[DiffusionModel, TextEncoder, Autoencoder]:
    """MODEL, CLIP and VAE from a checkpoint's state dict, whose tensors each part takes out of ``sd`` as it is
    built; ``source`` names the file in messages."""
    found = detect(sd)
    family = found.family
    unet, ldm_names = build_unet(family, sd, source)
    encoders = tuple(
        ClipEncoder(build_text_encoder(family, sd, prefix, component, source), pad, final_norm=not family.is_xl)
        for prefix, component, pad in _ENCODERS[family]
    )
    vae = build_vae(family, sd, source)
    model = DiffusionModel(
        unet=unet,
        family=family,
        sampling=found.sampling,
        in_channels=found.in_channels,
        source=source,
        extra={"ldm_names": ldm_names},
    )
    clip = TextEncoder(
        family=family,
        tokenizers=tuple(clip_tokenizer() for _ in encoders),
        encoders=encoders,
        stop_at_layer=default_clip_layer(family),
        source=source,
    )
    scale = float(configs.bundled_config(family, "vae")["scaling_factor"])
    return model, clip, Autoencoder(vae=vae, scaling_factor=scale, source=source)


def _checkpoint_bytes(loaded: tuple[DiffusionModel, TextEncoder, Autoencoder]) -> int:
    model, clip, vae = loaded
    return module_bytes(model.unet) + sum(module_bytes(e.module) for e in clip.encoders) + module_bytes(vae.vae)


def _unet_in(dtype: torch.dtype) -> Cast:
    """A cast taking the UNet's floating tensors to ``dtype`` as they are read: an fp16 SDXL file becomes an
    fp32 UNet on the CPU without the fp16 copy resident beside it."""

    def cast(key: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if key.startswith(layout.UNET_PREFIX) and tensor.is_floating_point() else tensor

    return cast


def load_checkpoint(path: Path) -> tuple[DiffusionModel, TextEncoder, Autoencoder]:
    """MODEL, CLIP, VAE of a checkpoint file; the same unchanged file returns the same objects."""

    def load(p: Path) -> tuple[tuple[DiffusionModel, TextEncoder, Autoencoder], int]:
        loaded = build_checkpoint(read_state_dict(p, _unet_in(policy().model_dtype)), p.name)
        return loaded, _checkpoint_bytes(loaded)

    return model_cache().get_or_load("checkpoint", path, load)


def load_vae(path: Path) -> Autoencoder:
    """A standalone VAE file. Its latent scale cannot be read from weights: an ``xl`` in the file name means
    SDXL's 0.13025, anything else SD1/SD2's 0.18215."""

    def load(p: Path) -> tuple[Autoencoder, int]:
        xl = "xl" in p.name.lower()
        family = ModelFamily.SDXL if xl else ModelFamily.SD1
        vae = build_vae(family, read_state_dict(p), p.name)
        scale = float(configs.bundled_config(family, "vae")["scaling_factor"])
        return Autoencoder(vae=vae, scaling_factor=scale, source=p.name), module_bytes(vae)

    return model_cache().get_or_load("vae", path, load)
