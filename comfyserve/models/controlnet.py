"""ControlNet files -> diffusers ``ControlNetModel`` (ComfyUI's CONTROL_NET), for SD1.x, SD2.x and SDXL.

Two layouts are read: the original LDM one (``control_model.input_blocks...``, ``zero_convs``,
``input_hint_block``, ``middle_block_out``; lllyasviel's SD1.5 ControlNets, with or without the
``control_model.`` prefix), converted with diffusers' single-file converter, and diffusers' own
(``controlnet_cond_embedding...``, most SDXL ControlNets), loaded as stored. The model's config is read off the
tensors' shapes, the family's published config filling what shapes do not show (attention heads, SDXL's size
embedding). As ComfyUI, a file whose name ends in ``_shuffle`` (or ``_shuffle_fp16``) pools its residuals.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch

from comfyserve.models import configs
from comfyserve.models.cache import model_cache
from comfyserve.models.checkpoint import _load_strict, _no_init_weights
from comfyserve.models.device import policy
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import StateDict, read_state_dict
from comfyserve.models.handles import ControlNet, DiffusionModel, ModelFamily
from comfyserve.models.lora import merged
from comfyserve.models.memory import module_bytes

LDM_PREFIX = "control_model."
DIFFUSERS_KEY = "controlnet_cond_embedding.conv_in.weight"
LDM_KEY = "zero_convs.0.0.weight"
DIFFERENCE_KEY = "difference"
_POOLING_SUFFIXES = ("_shuffle", "_shuffle_fp16")
_LABEL_EMBEDDING = {"label_emb.0.0.": "add_embedding.linear_1.", "label_emb.0.2.": "add_embedding.linear_2."}
_UNSUPPORTED = {
    "lora_controlnet": "a Control-LoRA",
    "control_add_embedding.linear_1.bias": "a union (ControlNet++) ControlNet",
    "controlnet_blocks.0.weight": "a ControlNet for a transformer model (SD3, Flux, HunyuanDiT, Qwen-Image)",
    "controlnet_blocks.0.linear.weight": "a ControlNet for a transformer model (SD3, Flux, HunyuanDiT, Qwen-Image)",
}


def _ldm_to_diffusers(sd: StateDict, source: str) -> StateDict:
    """diffusers keys of an LDM-layout ControlNet (keys without the ``control_model.`` prefix)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    levels = configs.count_indices(sd, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    blocks = configs.count_indices(sd, r"input_blocks\.(\d+)\.")
    if "input_hint_block.14.weight" not in sd or blocks < 2:
        raise ModelFileError(f"model file {source!r} is not a ControlNet of a known layout (no full hint block)")
    converted = convert_controlnet_checkpoint(sd, {"layers_per_block": (blocks - levels) // levels})
    for old, new in _LABEL_EMBEDDING.items():
        for key in [k for k in sd if k.startswith(old)]:
            converted[new + key[len(old) :]] = sd[key]
    return {k: v for k, v in converted.items() if v is not None}


def _family(sd: StateDict) -> ModelFamily:
    if "add_embedding.linear_1.weight" in sd:
        return ModelFamily.SDXL
    proj_in = next(v for k, v in sd.items() if k.endswith(".proj_in.weight"))
    return ModelFamily.SD2 if proj_in.ndim == 2 else ModelFamily.SD1


def controlnet_config(sd: StateDict) -> dict[str, Any]:
    """The ControlNetModel config of a diffusers-layout state dict."""
    from diffusers import ControlNetModel

    fields = set(inspect.signature(ControlNetModel.__init__).parameters)
    family = _family(sd)
    config = {k: v for k, v in configs.bundled_config(family, "unet").items() if k in fields}
    levels = configs.count_indices(sd, r"down_blocks\.(\d+)\.")
    widths = [int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)]
    depths = [
        configs.count_indices(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        for i in range(levels)
    ]
    mid_depth = configs.count_indices(sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")
    embedding_blocks = configs.count_indices(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    embedding = [int(sd[DIFFUSERS_KEY].shape[0])] + [
        int(sd[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"].shape[0]) for i in range(embedding_blocks // 2)
    ]
    config.update(
        in_channels=int(sd["conv_in.weight"].shape[1]),
        conditioning_channels=int(sd[DIFFUSERS_KEY].shape[1]),
        conditioning_embedding_out_channels=embedding,
        layers_per_block=configs.count_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
        block_out_channels=widths,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        transformer_layers_per_block=[d or 1 for d in depths[:-1]] + [mid_depth],
        cross_attention_dim=int(next(v for k, v in sd.items() if k.endswith("attn2.to_k.weight")).shape[1]),
        use_linear_projection=family is not ModelFamily.SD1,
        norm_num_groups=configs.norm_groups(widths),
        global_pool_conditions=False,
    )
    config["attention_head_dim"] = configs.attention_heads(config["attention_head_dim"], widths)
    if family is ModelFamily.SDXL:
        config["projection_class_embeddings_input_dim"] = int(sd["add_embedding.linear_1.weight"].shape[1])
    return config


def _diffusers_weights(sd: StateDict, source: str) -> tuple[StateDict, bool]:
    """The state dict in diffusers' layout, and whether it holds differences to a base UNet."""
    for key, what in _UNSUPPORTED.items():
        if key in sd:
            raise ModelFileError(f"model file {source!r} is {what}, which the built-in engine does not run")
    if DIFFUSERS_KEY in sd:
        return sd, False
    difference = DIFFERENCE_KEY in sd
    bare = {k[len(LDM_PREFIX) :]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    if LDM_KEY in bare:
        return _ldm_to_diffusers(bare, source), difference
    if LDM_KEY in sd:
        return _ldm_to_diffusers(sd, source), False
    raise ModelFileError(f"model file {source!r} is invalid and does not contain a valid controlnet model")


def build_controlnet(sd: StateDict, source: str, pooling: bool = False) -> ControlNet:
    """A CONTROL_NET (no hint yet) from a ControlNet file's tensors; ``source`` names the file in messages."""
    from diffusers import ControlNetModel

    weights, difference = _diffusers_weights(sd, source)
    try:
        config = controlnet_config(weights)
    except (KeyError, StopIteration) as exc:
        raise ModelFileError(f"model file {source!r} is not a ControlNet of a known layout (no {exc})") from exc
    with _no_init_weights():
        model = ControlNetModel.from_config(config)
    _load_strict(model, dict(weights), "ControlNet", source, policy().model_dtype)
    return ControlNet(model=model, global_average_pooling=pooling, difference=difference, source=source)


def load_controlnet(path: Path) -> ControlNet:
    """The CONTROL_NET of a file; the same unchanged file returns the same object."""

    def load(p: Path) -> tuple[ControlNet, int]:
        net = build_controlnet(read_state_dict(p), p.name, pooling=p.stem.endswith(_POOLING_SUFFIXES))
        return net, module_bytes(net.model)

    return model_cache().get_or_load("controlnet", path, load)


def with_base(net: ControlNet, model: DiffusionModel) -> ControlNet:
    """A difference ControlNet made whole: the base UNet's weights (its LoRAs merged, as ComfyUI reads the
    patched model) added to those it shares with it (the ControlNet's encoder half has the UNet's parameter
    names). Other ControlNets come back unchanged."""
    if not net.difference:
        return net
    control = copy.deepcopy(net.model)
    with torch.no_grad(), merged([("", model.unet)], model.lora):
        base = model.unet.state_dict()
        for name, parameter in control.named_parameters():
            if name in base and base[name].shape == parameter.shape:
                parameter.add_(base[name].to(parameter.device, parameter.dtype))
    return net.copy(model=control, difference=False)
