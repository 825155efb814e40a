"""The values that flow between model nodes (ComfyUI's MODEL, CLIP, VAE, CONDITIONING and LATENT types).

This module is the contract between the loading side (checkpoints, LoRA, text encoders, VAE) and the
sampling side (samplers, schedulers, KSampler). Both import it; neither reaches into the other's internals.

Conventions (ComfyUI's):
- LATENT is a dict ``{"samples": Tensor[B, C, H/8, W/8]}`` holding latents already multiplied by the VAE's
  scale factor (what the UNet sees), optionally with ``"noise_mask": Tensor[B or 1, 1, H', W']`` and
  ``"batch_index": list[int]``.
- CONDITIONING is a list of ``[cond, extras]`` pairs: ``cond`` is ``Tensor[1, 77*k, dim]`` (the text encoder's
  hidden states, chunks of 77 concatenated), ``extras`` a dict that may hold ``"pooled_output"`` (SDXL:
  ``Tensor[1, 1280]``), ``"width"``/``"height"``/``"crop_w"``/``"crop_h"``/``"target_width"``/``"target_height"``
  (SDXL size conditioning, pixels), ``"start_percent"``/``"end_percent"`` (timestep range, 0..1),
  ``"concat_latent_image"`` and ``"concat_mask"`` (inpainting models), ``"strength"``, ``"control"`` (a
  :class:`ControlNet` with its hint) and ``"control_apply_to_uncond"``.
- IMAGE is ``Tensor[B, H, W, C]`` float32 in 0..1; MASK is ``Tensor[B, H, W]`` float32 in 0..1.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# ComfyUI's model_options patches (set by model-patch nodes on a clone, read by the sampling side):
# ``sampler_cfg_function`` is called with (x, sigma, cond denoised, uncond denoised, cfg scale) and returns what
# the guided prediction is ``x`` minus, and ``output_block_patch`` maps a UNet output block's (hidden, skip)
# features before they are concatenated.
CfgFunction = Callable[["torch.Tensor", float, "torch.Tensor", "torch.Tensor", float], "torch.Tensor"]
OutputBlockPatch = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]


class ModelFamily(StrEnum):
    """The checkpoint families we detect and run."""

    SD1 = "sd1"
    SD1_INPAINT = "sd1_inpaint"
    SD2 = "sd2"
    SD2_V = "sd2_v"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl_refiner"

    @property
    def is_xl(self) -> bool:
        return self in (ModelFamily.SDXL, ModelFamily.SDXL_REFINER)


@dataclass(frozen=True)
class SamplingSettings:
    """How sigmas map to the model's timesteps and how its output is read (ModelSamplingDiscrete).

    ``prediction`` is ``"eps"``, ``"v_prediction"`` or ``"lcm"`` (eps with the LCM boundary conditions);
    ``zsnr`` rescales the schedule to zero terminal SNR. The schedule is SD's scaled-linear betas,
    ``linear_start=0.00085``, ``linear_end=0.012``, 1000 timesteps.
    """

    prediction: str = "eps"
    zsnr: bool = False
    linear_start: float = 0.00085
    linear_end: float = 0.012
    timesteps: int = 1000


@dataclass
class LoraPatch:
    """One LoRA applied to a model or text encoder: ``delta = strength * alpha/rank * up @ down`` per key.

    ``deltas`` maps a parameter name of the target module (diffusers naming, e.g.
    ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight``) to a function-free pair
    ``(up, down, scale)`` where ``scale`` already includes alpha/rank; strength is applied at patch time.
    """

    name: str
    strength: float
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]]


@dataclass
class DiffusionModel:
    """ComfyUI's MODEL: a UNet plus how to sample it. Nodes never mutate one; they ``clone`` and change.

    ``unet`` is a diffusers ``UNet2DConditionModel`` (shared between clones; LoRA patches are applied and
    removed around a sampling run by the loading side's ``patched()`` helper). ``in_channels`` is 9 for
    inpainting models (latent + mask + masked-image latent), 4 otherwise. ``cfg_function`` replaces the CFG
    formula (RescaleCFG); ``output_block_patches`` apply in order to every UNet output block (FreeU).
    """

    unet: Any
    family: ModelFamily
    sampling: SamplingSettings
    in_channels: int = 4
    latent_channels: int = 4
    lora: tuple[LoraPatch, ...] = ()
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cfg_function: CfgFunction | None = None
    output_block_patches: tuple[OutputBlockPatch, ...] = ()

    def clone(self, **changes: Any) -> DiffusionModel:
        other = copy.copy(self)
        for name, value in changes.items():
            setattr(other, name, value)
        other.extra = dict(self.extra)
        return other


@dataclass
class TextEncoder:
    """ComfyUI's CLIP: tokenizers and text encoders of one family (two for SDXL base, one for the refiner).

    ``stop_at_layer`` is CLIPSetLastLayer's value (-1 = last layer). The loading side implements encoding;
    the sampling side only consumes the CONDITIONING it produces.
    """

    family: ModelFamily
    tokenizers: tuple[Any, ...]
    encoders: tuple[Any, ...]
    stop_at_layer: int = -1
    lora: tuple[LoraPatch, ...] = ()
    source: str = ""

    def clone(self, **changes: Any) -> TextEncoder:
        other = copy.copy(self)
        for name, value in changes.items():
            setattr(other, name, value)
        return other


@dataclass
class Autoencoder:
    """ComfyUI's VAE: a diffusers ``AutoencoderKL`` with its latent scale factor (0.18215 SD1/2, 0.13025 SDXL).

    ``downscale`` is 8 for every family we support; ``latent_channels`` is 4.
    """

    vae: Any
    scaling_factor: float
    downscale: int = 8
    latent_channels: int = 4
    source: str = ""


@dataclass(frozen=True, eq=False)
class ControlNet:
    """ComfyUI's CONTROL_NET: a diffusers ``ControlNetModel`` and, once an apply node set them, its hint image
    (``[B, C, H, W]`` in 0..1), strength, the fraction of the run it acts in and the ControlNet it chains
    onto. Compared by identity: conditioning entries holding the same one share its UNet batches.

    ``global_average_pooling`` (shuffle ControlNets) replaces each residual by its spatial mean;
    ``difference`` marks a file holding differences to a base UNet (DiffControlNetLoader adds the base).
    """

    model: Any
    global_average_pooling: bool = False
    difference: bool = False
    source: str = ""
    hint: torch.Tensor | None = None
    strength: float = 1.0
    percent: tuple[float, float] = (0.0, 1.0)
    previous: ControlNet | None = None

    def copy(self, **changes: Any) -> ControlNet:
        return dataclasses.replace(self, **changes)

    def chain(self) -> list[ControlNet]:
        """This ControlNet and those it chains onto, the first applied first."""
        nets: list[ControlNet] = []
        net: ControlNet | None = self
        while net is not None:
            nets.append(net)
            net = net.previous
        return nets[::-1]
