"""ComfyUI's upscale model nodes (``comfy_extras/nodes_upscale_model.py``): load a model from ``upscale_models``
and upscale images with it in tiles. UPSCALE_MODEL is spandrel's ImageModelDescriptor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.engine.context import ProgressBar
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import model_files
from comfyserve.models.errors import ModelFileError
from comfyserve.models.upscale_model import load_upscale_model, upscale_image
from comfyserve.nodes.loaders import load_model

FOLDER = "upscale_models"


class UpscaleModelLoader:
    V3_SCHEMA = True  # ComfyUI's io.ComfyNode entry shape
    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load_model"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names, options = model_files(FOLDER)
        return {"required": {"model_name": ("COMBO", {"multiselect": False, "options": names, **options})}}

    def load_model(self, model_name: str) -> tuple[Any]:
        try:
            return (load_model(context.current().models, FOLDER, model_name, load_upscale_model),)
        except ModelFileError as exc:
            raise NodeInputError(str(exc)) from exc


def _progress(count: int) -> Callable[[], None]:
    bar = ProgressBar(count)
    return lambda: bar.update(1)


class ImageUpscaleWithModel:
    V3_SCHEMA = True  # ComfyUI's io.ComfyNode entry shape
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"upscale_model": ("UPSCALE_MODEL", {}), "image": ("IMAGE", {})}}

    def upscale(self, upscale_model: Any, image: torch.Tensor) -> tuple[torch.Tensor]:
        if image.ndim != 4 or image.shape[-1] != upscale_model.input_channels:
            raise NodeInputError(
                f"this upscale model takes images of {upscale_model.input_channels} channels "
                f"[batch, height, width, {upscale_model.input_channels}], got shape {list(image.shape)}"
            )
        return (upscale_image(upscale_model, image, _progress),)


NODE_CLASS_MAPPINGS = {
    "UpscaleModelLoader": UpscaleModelLoader,
    "ImageUpscaleWithModel": ImageUpscaleWithModel,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "UpscaleModelLoader": "Load Upscale Model",
    "ImageUpscaleWithModel": "Upscale Image (using Model)",
}
