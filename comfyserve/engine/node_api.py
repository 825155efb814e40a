"""Helpers for node authors: declaring model-file and input-file choices the way the catalog expects.

A loader declares ``"ckpt_name": model_files("checkpoints")``. The catalog then records the option
``{"model_folder": "checkpoints"}``, and validation checks the value against the model inventory it is
given (or accepts any name when it has none) instead of against a list frozen at export time.
"""

from __future__ import annotations

from typing import Any

from comfyserve.engine import context
from comfyserve.engine.inventory import ModelInventory

MODEL_FOLDER = "model_folder"
IMAGE_UPLOAD = "image_upload"


def upload_media(options: Any) -> str | None:
    """The media an input's options say it takes as an uploaded file: ``"image"`` for ``image_upload``,
    ``"video"``, ``"audio"`` … for ComfyUI's other ``*_upload`` flags; ``None`` for any other input."""
    if not isinstance(options, dict):
        return None
    flags = (key for key, value in options.items() if key.endswith("_upload") and value)
    return next((key.removesuffix("_upload") for key in flags), None)


def takes_upload(options: Any) -> bool:
    """Whether an input's options mark it as taking an uploaded file (:func:`upload_media`)."""
    return upload_media(options) is not None


_default_inventory = ModelInventory()


def set_default_inventory(inventory: ModelInventory) -> None:
    """The inventory that loaders list when no job is running (catalog export, ``/object_info``)."""
    global _default_inventory
    _default_inventory = inventory


def active_inventory() -> ModelInventory:
    """The running job's inventory, else the process default."""
    ctx = context.active()
    return ctx.models if ctx is not None else _default_inventory


def model_files(folder: str, **options: Any) -> tuple[list[str], dict[str, Any]]:
    """A COMBO input listing the model files of ``folder`` (ComfyUI folder names: checkpoints, loras, vae ...)."""
    return (active_inventory().names(folder), {MODEL_FOLDER: folder, **options})


def input_files(**options: Any) -> tuple[list[str], dict[str, Any]]:
    """A COMBO input naming an input image: any supplied input name, file name or URL is accepted."""
    ctx = context.active()
    names = sorted(ctx.inputs) if ctx is not None else []
    return (names, {IMAGE_UPLOAD: True, **options})
