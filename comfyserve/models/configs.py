"""The bundled diffusers/transformers configs, scaled to the widths a state dict actually has.

``configs/<family>/<component>/config.json`` hold the published full-size configs (SD 1.5, SD 2.1, SDXL 1.0
base and refiner). A checkpoint's structure-dependent fields (widths, levels, blocks, depths, layers, input
channels) are read off its tensors' shapes, so a full-size file reproduces the bundled config exactly and a
tiny test model goes through the very same code with smaller numbers. Two fields are not visible in shapes and
follow fixed rules: attention heads (:func:`attention_heads`; CLIP: one per 64 channels) and
GroupNorm groups (32, or the largest divisor of 32 that divides every width).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from comfyserve.models.handles import ModelFamily

TOKENIZER_DIR = "tokenizer"
_CONFIG_FAMILY = {
    ModelFamily.SD1: "sd1",
    ModelFamily.SD1_INPAINT: "sd1",
    ModelFamily.SD2: "sd2",
    ModelFamily.SD2_V: "sd2",
    ModelFamily.SDXL: "sdxl",
    ModelFamily.SDXL_REFINER: "sdxl_refiner",
}


def config_root() -> Path:
    return Path(str(resources.files("comfyserve.models") / "configs"))


@cache
def _bundled(family_dir: str, component: str) -> dict[str, Any]:
    with open(config_root() / family_dir / component / "config.json", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def bundled_config(family: ModelFamily, component: str) -> dict[str, Any]:
    """A copy of the published full-size config of one component (unet, vae, text_encoder, text_encoder_2)."""
    return dict(_bundled(_CONFIG_FAMILY[family], component))


def count_indices(keys: Mapping[str, Any], pattern: str) -> int:
    """How many distinct integers fill the ``(\\d+)`` group of ``pattern`` among ``keys``."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := regex.match(k))})


def norm_groups(widths: list[int]) -> int:
    return math.gcd(32, *widths)


def attention_heads(published: int | list[int], widths: list[int]) -> int | list[int]:
    """Heads per level: SD2/SDXL (a published list) one per 64 channels; SD1 (a published 8) eight, but none
    narrower than 40 channels (SD 1.5's 320 / 8), so that narrow test models keep usable heads."""
    if isinstance(published, list):
        return [max(1, w // 64) for w in widths]
    heads = {max(1, min(published, w // 40)) for w in widths}
    return heads.pop() if len(heads) == 1 else [max(1, min(published, w // 40)) for w in widths]


def unet_config(family: ModelFamily, unet: Mapping[str, Any]) -> dict[str, Any]:
    """The UNet2DConditionModel config of an LDM UNet state dict (keys without ``model.diffusion_model.``)."""
    config = bundled_config(family, "unet")
    levels = count_indices(unet, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    layers = (count_indices(unet, r"input_blocks\.(\d+)\.") - levels) // levels
    widths, depths = [], []
    for level in range(levels):
        first = 1 + level * (layers + 1)
        widths.append(int(unet[f"input_blocks.{first}.0.out_layers.3.weight"].shape[0]))
        depths.append(count_indices(unet, rf"input_blocks\.{first}\.1\.transformer_blocks\.(\d+)\."))
    mid_depth = count_indices(unet, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    if depths[-1] and depths[-1] != mid_depth:
        raise ValueError("unsupported UNet: its deepest level and its middle block differ in transformer depth")
    proj_in = next(v for k, v in unet.items() if k.endswith(".proj_in.weight"))
    config.update(
        in_channels=int(unet["input_blocks.0.0.weight"].shape[1]),
        out_channels=int(unet["out.2.weight"].shape[0]),
        layers_per_block=layers,
        block_out_channels=widths,
        down_block_types=["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depths],
        up_block_types=["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depths)],
        transformer_layers_per_block=[d or 1 for d in depths[:-1]] + [mid_depth],
        cross_attention_dim=int(next(v for k, v in unet.items() if k.endswith("attn2.to_k.weight")).shape[1]),
        use_linear_projection=proj_in.ndim == 2,
        norm_num_groups=norm_groups(widths),
    )
    config["attention_head_dim"] = attention_heads(config["attention_head_dim"], widths)
    if "label_emb.0.0.weight" in unet:
        config["projection_class_embeddings_input_dim"] = int(unet["label_emb.0.0.weight"].shape[1])
    return config


def vae_config(family: ModelFamily, vae: Mapping[str, Any]) -> dict[str, Any]:
    """The AutoencoderKL config of an LDM VAE state dict (keys without ``first_stage_model.``)."""
    config = bundled_config(family, "vae")
    levels = count_indices(vae, r"encoder\.down\.(\d+)\.")
    widths = [int(vae[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels)]
    config.update(
        block_out_channels=widths,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=count_indices(vae, r"encoder\.down\.0\.block\.(\d+)\."),
        in_channels=int(vae["encoder.conv_in.weight"].shape[1]),
        out_channels=int(vae["decoder.conv_out.weight"].shape[0]),
        latent_channels=int(vae["post_quant_conv.weight"].shape[0]),
        norm_num_groups=norm_groups(widths),
    )
    return config


def text_config(family: ModelFamily, component: str, converted: Mapping[str, Any]) -> dict[str, Any]:
    """A CLIPTextConfig dict for a text encoder already converted to transformers keys."""
    config = bundled_config(family, component)
    prefix = "text_model." if any(k.startswith("text_model.") for k in converted) else ""
    tokens = converted[f"{prefix}embeddings.token_embedding.weight"]
    width = int(tokens.shape[1])
    config.update(
        vocab_size=int(tokens.shape[0]),
        hidden_size=width,
        max_position_embeddings=int(converted[f"{prefix}embeddings.position_embedding.weight"].shape[0]),
        num_hidden_layers=count_indices(converted, rf"{re.escape(prefix)}encoder\.layers\.(\d+)\."),
        intermediate_size=int(converted[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_attention_heads=max(1, width // 64),
    )
    if "text_projection.weight" in converted:
        config["projection_dim"] = int(converted["text_projection.weight"].shape[0])
    return config
