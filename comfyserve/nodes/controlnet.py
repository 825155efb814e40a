"""ComfyUI's ControlNet nodes: load a ControlNet and attach it, with a hint image, to conditioning entries.

An apply node puts a copy of the CONTROL_NET holding the hint, strength and percent range under the entry's
``"control"`` key, chained onto the ControlNet the entry already had; sampling runs the chain (see
``comfyserve.models.sampling.control``). ControlNetApply also marks its entries ``control_apply_to_uncond``: when
no negative entry has a ControlNet, sampling hands the positive ones to the negative side.
"""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import model_files
from comfyserve.models.controlnet import load_controlnet, with_base
from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import ControlNet, DiffusionModel
from comfyserve.models.text import Conditioning
from comfyserve.nodes.conditioning import _pairs
from comfyserve.nodes.loaders import load_model

UNION_CONTROLNET_TYPES = (
    "openpose",
    "depth",
    "hed/pidi/scribble/ted",
    "canny/lineart/anime_lineart/mlsd",
    "normal",
    "segment",
    "tile",
    "repaint",
)
_STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


def _load(name: str) -> ControlNet:
    try:
        return load_model(context.current().models, "controlnet", name, load_controlnet)
    except ModelFileError as exc:
        raise NodeInputError(str(exc)) from exc


def _control_net(value: Any) -> ControlNet:
    if not isinstance(value, ControlNet):
        raise NodeInputError("control_net must be a CONTROL_NET (from a ControlNet loader)")
    return value


def _hint(image: Any) -> torch.Tensor:
    """The IMAGE ``[B, H, W, C]`` as the ``[B, C, H, W]`` hint a ControlNet reads."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or min(image.shape) == 0:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else None
        raise NodeInputError(f"image must be an IMAGE of shape [batch, height, width, channels], got {shape}")
    return image.movedim(-1, 1)


def _previous(extras: dict[str, Any]) -> ControlNet | None:
    previous = extras.get("control")
    if previous is not None and not isinstance(previous, ControlNet):
        raise NodeInputError("a conditioning entry holds a control that is not a CONTROL_NET")
    return previous


class ControlNetLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"control_net_name": model_files("controlnet")}}

    def load_controlnet(self, control_net_name: str) -> tuple[ControlNet]:
        return (_load(control_net_name),)


class DiffControlNetLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "control_net_name": model_files("controlnet")}}

    def load_controlnet(self, model: DiffusionModel, control_net_name: str) -> tuple[ControlNet]:
        """A ControlNet stored as differences to a base UNet gets ``model``'s weights added; others load as is."""
        if not isinstance(model, DiffusionModel):
            raise NodeInputError("model must be a MODEL")
        return (with_base(_load(control_net_name), model),)


class ControlNetApply:
    CATEGORY = "conditioning/controlnet"
    DEPRECATED = True
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "control_net": ("CONTROL_NET",),
                "image": ("IMAGE",),
                "strength": _STRENGTH,
            }
        }

    def apply_controlnet(
        self, conditioning: Conditioning, control_net: ControlNet, image: torch.Tensor, strength: float
    ) -> tuple[Conditioning]:
        """Each entry gets its own copy of the ControlNet, over the whole run; strength 0 changes nothing."""
        if strength == 0:
            return (conditioning,)
        pairs = _pairs(conditioning, "conditioning")
        net, hint = _control_net(control_net), _hint(image)
        out = []
        for cond, extras in pairs:
            applied = net.copy(hint=hint, strength=strength, percent=(0.0, 1.0), previous=_previous(extras))
            out.append([cond, {**extras, "control": applied, "control_apply_to_uncond": True}])
        return (out,)


class ControlNetApplyAdvanced:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("positive", "negative")
    FUNCTION = "apply_controlnet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "control_net": ("CONTROL_NET",),
                "image": ("IMAGE",),
                "strength": _STRENGTH,
                "start_percent": ("FLOAT", {"default": 0.0, **_PERCENT}),
                "end_percent": ("FLOAT", {"default": 1.0, **_PERCENT}),
            },
            "optional": {"vae": ("VAE",)},
        }

    def apply_controlnet(
        self,
        positive: Conditioning,
        negative: Conditioning,
        control_net: ControlNet,
        image: torch.Tensor,
        strength: float,
        start_percent: float,
        end_percent: float,
        vae: Any = None,
    ) -> tuple[Conditioning, Conditioning]:
        """Both sides' entries get the ControlNet; entries that held the same previous ControlNet share one copy
        (so their UNet calls batch together). ``vae`` is for ControlNets working on latents, which SD1.x/SDXL
        ones do not: it is not used."""
        if strength == 0:
            return (positive, negative)
        sides = (_pairs(positive, "positive"), _pairs(negative, "negative"))
        net, hint = _control_net(control_net), _hint(image)
        copies: dict[int, ControlNet] = {}
        out: list[Conditioning] = []
        for pairs in sides:
            side = []
            for cond, extras in pairs:
                previous = _previous(extras)
                key = id(previous)
                if key not in copies:
                    percent = (start_percent, end_percent)
                    copies[key] = net.copy(hint=hint, strength=strength, percent=percent, previous=previous)
                side.append([cond, {**extras, "control": copies[key], "control_apply_to_uncond": False}])
            out.append(side)
        return (out[0], out[1])


class SetUnionControlNetType:
    CATEGORY = "conditioning/controlnet"
    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "set_controlnet_type"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"control_net": ("CONTROL_NET",), "type": (["auto", *UNION_CONTROLNET_TYPES],)}}

    def set_controlnet_type(self, control_net: ControlNet, type: str) -> tuple[ControlNet]:
        """The control type only steers union (ControlNet++) models, which the loaders refuse: the ControlNets
        offered here come back as an unchanged copy, as in ComfyUI."""
        if type != "auto" and type not in UNION_CONTROLNET_TYPES:
            raise NodeInputError(f"type must be 'auto' or one of {', '.join(UNION_CONTROLNET_TYPES)}, got {type!r}")
        return (_control_net(control_net).copy(),)


NODE_CLASS_MAPPINGS = {
    "ControlNetLoader": ControlNetLoader,
    "DiffControlNetLoader": DiffControlNetLoader,
    "ControlNetApply": ControlNetApply,
    "ControlNetApplyAdvanced": ControlNetApplyAdvanced,
    "SetUnionControlNetType": SetUnionControlNetType,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "ControlNetLoader": "Load ControlNet Model",
    "DiffControlNetLoader": "Load ControlNet Model (diff)",
    "ControlNetApply": "Apply ControlNet (OLD)",
    "ControlNetApplyAdvanced": "Apply ControlNet",
}
