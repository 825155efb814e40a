"""ComfyUI's SDXL text encoders (``comfy_extras/nodes_clip_sdxl``): a prompt per text encoder plus the size
conditioning SDXL's added embeddings read (``width``/``height``, ``crop_w``/``crop_h``, ``target_width``/
``target_height``), or the refiner's ``aesthetic_score``. The sampling side turns those extras into ``time_ids``
(``comfyserve.models.sampling.conditioning``)."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import ModelFamily, TextEncoder
from comfyserve.models.text import Conditioning, encode_text, encode_windows, sdxl_windows
from comfyserve.nodes.image import MAX_RESOLUTION

_TEXT = ("STRING", {"multiline": True, "dynamicPrompts": True})


def _size(default: int) -> tuple[str, dict[str, int]]:
    return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION})


def _clip(clip: Any) -> TextEncoder:
    if not isinstance(clip, TextEncoder):
        raise NodeInputError("clip input is invalid: None (the checkpoint holds no text encoder)")
    return clip


def _with(conditioning: Conditioning, extras: dict[str, Any]) -> Conditioning:
    return [[cond, {**options, **extras}] for cond, options in conditioning]


class CLIPTextEncodeSDXLRefiner:
    V3_SCHEMA = True  # ComfyUI's io.ComfyNode entry shape
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
                "width": _size(1024),
                "height": _size(1024),
                "text": _TEXT,
                "clip": ("CLIP", {}),
            }
        }

    def execute(self, clip: TextEncoder, ascore: float, width: int, height: int, text: str) -> tuple[Conditioning]:
        extras = {"aesthetic_score": ascore, "width": width, "height": height}
        return (_with(encode_text(_clip(clip), text), extras),)


class CLIPTextEncodeSDXL:
    V3_SCHEMA = True  # ComfyUI's io.ComfyNode entry shape
    CATEGORY = "advanced/conditioning"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip": ("CLIP", {}),
                "width": _size(1024),
                "height": _size(1024),
                "crop_w": _size(0),
                "crop_h": _size(0),
                "target_width": _size(1024),
                "target_height": _size(1024),
                "text_g": _TEXT,
                "text_l": _TEXT,
            }
        }

    def execute(
        self,
        clip: TextEncoder,
        width: int,
        height: int,
        crop_w: int,
        crop_h: int,
        target_width: int,
        target_height: int,
        text_g: str,
        text_l: str,
    ) -> tuple[Conditioning]:
        clip = _clip(clip)
        if clip.family != ModelFamily.SDXL:
            raise NodeInputError(
                f"CLIPTextEncodeSDXL needs the CLIP of an SDXL base checkpoint (CLIP-L and bigG), got a "
                f"{clip.family.value} CLIP: use CLIPTextEncode (or CLIPTextEncodeSDXLRefiner for the refiner)"
            )
        extras = {
            "width": width,
            "height": height,
            "crop_w": crop_w,
            "crop_h": crop_h,
            "target_width": target_width,
            "target_height": target_height,
        }
        return (_with(encode_windows(clip, sdxl_windows(clip, text_g, text_l)), extras),)


NODE_CLASS_MAPPINGS = {"CLIPTextEncodeSDXLRefiner": CLIPTextEncodeSDXLRefiner, "CLIPTextEncodeSDXL": CLIPTextEncodeSDXL}
