"""A small node pack for validation tests: declarations only, in ComfyUI's classic contract, no torch."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.node_api import input_files, model_files


class Loader:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": model_files("checkpoints")}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"


class LoadPicture:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": input_files()}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load"


class Sampler:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
                "sampler_name": (["euler", "heun", "dpmpp_2m"],),
                "scheduler": ("COMBO", {"options": ["normal", "karras"]}),
                "width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
            },
            "optional": {
                "flag": ("BOOLEAN", {"default": False}),
                "note": ("STRING", {"default": ""}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "sample"


class Many:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"choice": ([f"option{i}" for i in range(30)],), "image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "pick"


class Passthrough:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Union:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("IMAGE,FLOAT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Checked:
    """VALIDATE_INPUTS handles ``limit`` itself, so the built-in max check is skipped for it."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",), "limit": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}

    @classmethod
    def VALIDATE_INPUTS(cls, limit: float) -> bool | str:
        return True if limit < 7 else f"limit {limit} is not below 7"

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"


class Save:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True


NODE_CLASS_MAPPINGS = {
    "Loader": Loader,
    "LoadPicture": LoadPicture,
    "Sampler": Sampler,
    "Many": Many,
    "Passthrough": Passthrough,
    "Union": Union,
    "Checked": Checked,
    "Save": Save,
}
