"""ComfyUI's text-conditioning nodes: encode a prompt, pick the CLIP layer, and combine conditionings.

CONDITIONING is a list of ``[cond, extras]`` pairs (see ``comfyserve.models.handles``); nodes never mutate
the pairs they receive.
"""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import TextEncoder
from comfyserve.models.text import Conditioning, encode_text

_PERCENT = {"min": 0.0, "max": 1.0, "step": 0.001}


def _pairs(conditioning: Any, name: str) -> Conditioning:
    if not isinstance(conditioning, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], torch.Tensor) for p in conditioning
    ):
        raise NodeInputError(f"{name} must be a CONDITIONING: a list of [tensor, options] pairs")
    return conditioning


class CLIPTextEncode:
    DESCRIPTION = (
        "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model "
        "towards generating specific images."
    )
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    def encode(self, clip: TextEncoder | None, text: str) -> tuple[Conditioning]:
        if clip is None:
            raise NodeInputError("clip input is invalid: None (the checkpoint holds no text encoder)")
        return (encode_text(clip, text),)


class CLIPSetLastLayer:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "set_last_layer"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP",),
                "stop_at_clip_layer": ("INT", {"default": -1, "min": -24, "max": -1, "step": 1}),
            }
        }

    def set_last_layer(self, clip: TextEncoder, stop_at_clip_layer: int) -> tuple[TextEncoder]:
        if not -24 <= stop_at_clip_layer <= -1:
            raise NodeInputError(f"stop_at_clip_layer must be between -24 and -1, got {stop_at_clip_layer}")
        return (clip.clone(stop_at_layer=stop_at_clip_layer),)


class ConditioningCombine:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "combine"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    def combine(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        return (_pairs(conditioning_1, "conditioning_1") + _pairs(conditioning_2, "conditioning_2"),)


class ConditioningAverage:
    CATEGORY = "conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "addWeighted"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning_to": ("CONDITIONING",),
                "conditioning_from": ("CONDITIONING",),
                "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    def addWeighted(
        self, conditioning_to: Conditioning, conditioning_from: Conditioning, conditioning_to_strength: float
    ) -> tuple[Conditioning]:
        """Blend every ``to`` cond with the first ``from`` cond (cut or zero-padded to its length)."""
        source = _pairs(conditioning_from, "conditioning_from")
        if not source:
            raise NodeInputError("conditioning_from is empty")
        cond_from, pooled_from = source[0][0], source[0][1].get("pooled_output")
        strength = conditioning_to_strength
        out = []
        for cond_to, extras in _pairs(conditioning_to, "conditioning_to"):
            if cond_from.shape[2] != cond_to.shape[2]:
                raise NodeInputError(
                    f"cannot average conditionings of widths {cond_to.shape[2]} and {cond_from.shape[2]}"
                )
            blend_from = cond_from[:, : cond_to.shape[1]]
            if blend_from.shape[1] < cond_to.shape[1]:
                padding = torch.zeros((1, cond_to.shape[1] - blend_from.shape[1], cond_to.shape[2]))
                blend_from = torch.cat([blend_from, padding.to(blend_from)], dim=1)
            new_extras = dict(extras)
            pooled_to = extras.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                new_extras["pooled_output"] = pooled_to * strength + pooled_from * (1.0 - strength)
            elif pooled_from is not None:
                new_extras["pooled_output"] = pooled_from
            out.append([cond_to * strength + blend_from * (1.0 - strength), new_extras])
        return (out,)


class ConditioningZeroOut:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "zero_out"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",)}}

    def zero_out(self, conditioning: Conditioning) -> tuple[Conditioning]:
        out = []
        for cond, extras in _pairs(conditioning, "conditioning"):
            new_extras = dict(extras)
            if extras.get("pooled_output") is not None:
                new_extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
            out.append([torch.zeros_like(cond), new_extras])
        return (out,)


class ConditioningSetTimestepRange:
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "set_range"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "start": ("FLOAT", {"default": 0.0, **_PERCENT}),
                "end": ("FLOAT", {"default": 1.0, **_PERCENT}),
            }
        }

    def set_range(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        """The conditioning applies from ``start`` to ``end`` of the sampling run (fractions of it)."""
        pairs = _pairs(conditioning, "conditioning")
        return ([[cond, {**extras, "start_percent": start, "end_percent": end}] for cond, extras in pairs],)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncode": CLIPTextEncode,
    "CLIPSetLastLayer": CLIPSetLastLayer,
    "ConditioningCombine": ConditioningCombine,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningZeroOut": ConditioningZeroOut,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "CLIPSetLastLayer": "CLIP Set Last Layer",
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningAverage": "Conditioning (Average)",
}
