"""ComfyUI's split-file loaders: a diffusion model (UNETLoader) and text encoders (CLIPLoader, DualCLIPLoader)
from their own files in ``diffusion_models`` and ``text_encoders`` (see :mod:`comfyserve.models.split`).

The ``type`` lists are ComfyUI's whole lists (the catalog is ComfyUI's); this engine serves the SD1.x, SD2.x
and SDXL encoders: CLIPLoader ``stable_diffusion`` (CLIP-L: SD1.x, CLIP-H: SD2.x, CLIP-G: the SDXL refiner)
and DualCLIPLoader ``sdxl`` (CLIP-L + CLIP-G, in either order). Validation refuses any other type (the
catalog's ``served_options``), and so does the node before reading a file (a type fed by a link).
``device: cpu`` (ComfyUI: keep the text encoder on the CPU) runs it where the other text encoders run.
"""

from __future__ import annotations

from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import model_files
from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import DiffusionModel, TextEncoder
from comfyserve.models.split import ClipKind, load_clip_module, load_diffusion_model, text_encoder
from comfyserve.nodes.loaders import load_model

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,  # ComfyUI's fp8 matrix products on fp8 GPUs: not reproduced
    "fp8_e5m2": torch.float8_e5m2,
}
CLIP_TYPES = (
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
)
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image")
SERVED_CLIP_TYPE = "stable_diffusion"
SERVED_DUAL_CLIP_TYPE = "sdxl"
_DEVICES = (["default", "cpu"], {"advanced": True})
_CLIP_FOLDER = "text_encoders"


def unserved_type(node: str, value: str, served: str, what: str) -> str | None:
    """Why ``node`` cannot serve the ``type`` ``value`` (None when it can)."""
    if value == served:
        return None
    return f"{node} type {value!r} is not served by this engine: it serves type {served!r} ({what})"


_CLIP_SERVES = "CLIP-L for SD1.x, CLIP-H for SD2.x, CLIP-G for the SDXL refiner"
_DUAL_SERVES = "CLIP-L and CLIP-G for SDXL"


def _require(node: str, value: str, served: str, what: str) -> None:
    reason = unserved_type(node, value, served, what)
    if reason is not None:
        raise NodeInputError(reason)


def _load(folder: str, name: str, load: Any) -> Any:
    try:
        return load_model(context.current().models, folder, name, load)
    except ModelFileError as exc:
        raise NodeInputError(str(exc)) from exc


class UNETLoader:
    CATEGORY = "advanced/loaders"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load_unet"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"unet_name": model_files("diffusion_models"), "weight_dtype": (list(WEIGHT_DTYPES),)}}

    def load_unet(self, unet_name: str, weight_dtype: str) -> tuple[DiffusionModel]:
        if weight_dtype not in WEIGHT_DTYPES:
            raise NodeInputError(f"weight_dtype {weight_dtype!r} is not one of {', '.join(WEIGHT_DTYPES)}")
        fp8 = WEIGHT_DTYPES[weight_dtype]
        return (_load("diffusion_models", unet_name, lambda path: load_diffusion_model(path, fp8)),)


class CLIPLoader:
    CATEGORY = "advanced/loaders"
    DESCRIPTION = (
        "[Recipes]\n\nstable_diffusion: clip-l\nstable_cascade: clip-g\nsd3: t5 xxl/ clip-g / clip-l\n"
        "stable_audio: t5 base\nmochi: t5 xxl\ncosmos: old t5 xxl\nlumina2: gemma 2 2B\nwan: umt5 xxl\n "
        "hidream: llama-3.1 (Recommend) or t5\nomnigen2: qwen vl 2.5 3B"
    )
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    SERVED_OPTIONS = {"type": (SERVED_CLIP_TYPE,)}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"clip_name": model_files(_CLIP_FOLDER), "type": (list(CLIP_TYPES),)},
            "optional": {"device": _DEVICES},
        }

    def load_clip(self, clip_name: str, type: str = SERVED_CLIP_TYPE, device: str = "default") -> tuple[TextEncoder]:
        _require("CLIPLoader", type, SERVED_CLIP_TYPE, _CLIP_SERVES)
        kind, module = _load(_CLIP_FOLDER, clip_name, load_clip_module)
        return (text_encoder([(kind, module)], clip_name),)


class DualCLIPLoader:
    CATEGORY = "advanced/loaders"
    DESCRIPTION = (
        "[Recipes]\n\nsdxl: clip-l, clip-g\nsd3: clip-l, clip-g / clip-l, t5 / clip-g, t5\nflux: clip-l, t5\n"
        "hidream: at least one of t5 or llama, recommended t5 and llama\nhunyuan_image: qwen2.5vl 7b and byt5 small"
    )
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load_clip"
    SERVED_OPTIONS = {"type": (SERVED_DUAL_CLIP_TYPE,)}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip_name1": model_files(_CLIP_FOLDER),
                "clip_name2": model_files(_CLIP_FOLDER),
                "type": (list(DUAL_CLIP_TYPES),),
            },
            "optional": {"device": _DEVICES},
        }

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[TextEncoder]:
        _require("DualCLIPLoader", type, SERVED_DUAL_CLIP_TYPE, _DUAL_SERVES)
        loaded = [_load(_CLIP_FOLDER, name, load_clip_module) for name in (clip_name1, clip_name2)]
        kinds = [kind for kind, _ in loaded]
        if sorted(kinds) != [ClipKind.G, ClipKind.L]:
            raise NodeInputError(
                f"DualCLIPLoader type 'sdxl' needs a CLIP-L and a CLIP-G text encoder: clip_name1 {clip_name1!r} "
                f"is {kinds[0]}, clip_name2 {clip_name2!r} is {kinds[1]}"
            )
        return (text_encoder(loaded, f"{clip_name1} + {clip_name2}"),)


NODE_CLASS_MAPPINGS = {"UNETLoader": UNETLoader, "CLIPLoader": CLIPLoader, "DualCLIPLoader": DualCLIPLoader}

NODE_DISPLAY_NAME_MAPPINGS = {"UNETLoader": "Load Diffusion Model", "CLIPLoader": "Load CLIP"}
