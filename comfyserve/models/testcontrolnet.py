"""Tiny random-weight ControlNet files for the test checkpoints of :mod:`testmodels`, in the layouts people publish.

SD1.x and SD2.x ones use the original LDM layout of lllyasviel's ControlNets (``control_model.`` keys: the
UNet's encoder half, ``zero_convs``, ``input_hint_block``, ``middle_block_out``); SDXL ones use diffusers'
``ControlNetModel`` layout. Widths follow the checkpoint sizes given, so a ControlNet fits the UNet of the same
family and sizes. Every weight is random (a published ControlNet starts with zero convolutions; random ones make
the residuals visible in tests).
"""

from __future__ import annotations

import itertools

import torch

from comfyserve.models import layout
from comfyserve.models.configs import unet_config
from comfyserve.models.controlnet import LDM_PREFIX
from comfyserve.models.handles import ModelFamily

Shapes = dict[str, tuple[int, ...]]
HINT_CHANNELS = 3
HINT_WIDTHS = (16, 32, 96, 256)  # the hint encoder of every published SD ControlNet
_ENCODER_PARTS = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")


def _conv(shapes: Shapes, name: str, out: int, inp: int, kernel: int) -> None:
    shapes[f"{name}.weight"] = (out, inp, kernel, kernel)
    shapes[f"{name}.bias"] = (out,)


def ldm_controlnet_shapes(dims: layout.UNetDims) -> Shapes:
    """An LDM-layout ControlNet for a UNet of ``dims``, keys under ``control_model.``."""
    unet = {k[len(layout.UNET_PREFIX) :]: v for k, v in layout.unet_shapes(dims).items()}
    shapes = {k: v for k, v in unet.items() if k.startswith(_ENCODER_PARTS)}
    skips = [dims.channels[0]]  # the width of each input block's output, as unet_shapes builds them
    for level, width in enumerate(dims.channels):
        skips += [width] * (dims.layers + (level != len(dims.channels) - 1))
    for index, width in enumerate(skips):
        _conv(shapes, f"zero_convs.{index}.0", width, width, 1)
    _conv(shapes, "middle_block_out.0", dims.channels[-1], dims.channels[-1], 1)
    widths = (HINT_CHANNELS, *[w for w in HINT_WIDTHS for _ in (0, 1)][:-1])  # 3 -> 16 -> 16 -> 32 ... -> 256
    for index, (inp, out) in enumerate(itertools.pairwise(widths)):
        _conv(shapes, f"input_hint_block.{2 * index}", out, inp, 3)
    _conv(shapes, f"input_hint_block.{2 * len(widths) - 2}", dims.channels[0], HINT_WIDTHS[-1], 3)
    return {LDM_PREFIX + k: v for k, v in shapes.items()}


def diffusers_controlnet_shapes(family: ModelFamily, dims: layout.UNetDims) -> Shapes:
    """A diffusers-layout ControlNet (``ControlNetModel.from_unet``) for a UNet of ``dims``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = {k[len(layout.UNET_PREFIX) :]: torch.empty(v, device="meta") for k, v in layout.unet_shapes(dims).items()}
    with torch.device("meta"):
        model = UNet2DConditionModel.from_config(unet_config(family, unet))
        control = ControlNetModel.from_unet(model, conditioning_embedding_out_channels=HINT_WIDTHS)
    return {k: tuple(v.shape) for k, v in control.state_dict().items()}


def controlnet_shapes(family: ModelFamily, dims: layout.UNetDims) -> Shapes:
    """SDXL: diffusers layout; SD1.x / SD2.x: LDM layout."""
    return diffusers_controlnet_shapes(family, dims) if family.is_xl else ldm_controlnet_shapes(dims)


def controlnet_family(family: ModelFamily) -> ModelFamily:
    """The checkpoint family whose UNet a ControlNet for ``family`` models fits (an inpainting UNet's encoder
    takes 9 channels, its ControlNets 4 like SD1.x's)."""
    return {ModelFamily.SD1_INPAINT: ModelFamily.SD1, ModelFamily.SD2_V: ModelFamily.SD2}.get(family, family)
