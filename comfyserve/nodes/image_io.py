"""ComfyUI's image file nodes: LoadImage, LoadImageMask, SaveImage and PreviewImage.

Files come from and go to the running job's folders (:func:`comfyserve.engine.context.current`). A save
prefix may name subfolders ("a/b/name") but can never leave the output folder.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import input_files
from comfyserve.nodes.imagefile import decode_frames, decode_image, encode_png, to_uint8

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class SaveTarget:
    """Where a batch of files goes: ``folder`` on disk, the ``filename`` stem, the ``subfolder`` ComfyUI
    reports, and the first free ``counter``."""

    folder: Path
    filename: str
    subfolder: str
    counter: int


def resolve_save_target(root: Path, filename_prefix: str, width: int, height: int) -> SaveTarget:
    """ComfyUI's ``get_save_image_path``: expand ``%width%``/``%height%``/date variables, split the
    prefix into subfolder and name, and continue the counter after the highest existing file."""
    prefix = _expand_variables(filename_prefix, width, height).replace("\\", "/")
    parts = prefix.split("/")
    if "\x00" in prefix or prefix.startswith("/") or _DRIVE.match(prefix) or ".." in parts:
        raise NodeInputError(
            f"filename_prefix {filename_prefix!r} must stay inside the output folder "
            "(no absolute path, drive letter or '..')"
        )
    parts = [p for p in parts if p not in ("", ".")] or [""]
    subfolder = "/".join(parts[:-1])
    folder = root / subfolder
    if not folder.resolve().is_relative_to(root.resolve()):
        raise NodeInputError(f"filename_prefix {filename_prefix!r} leads outside the output folder")
    folder.mkdir(parents=True, exist_ok=True)
    return SaveTarget(folder, parts[-1], subfolder, _next_counter(folder, parts[-1]))


def _expand_variables(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def _next_counter(folder: Path, filename: str) -> int:
    """One more than the highest N of the ``{filename}_N...`` files in ``folder`` (1 when there are none)."""
    highest = 0
    lead = filename + "_"
    for entry in folder.iterdir():
        if entry.name.startswith(lead):
            digits = entry.name[len(lead) :].split("_")[0]
            if digits.isascii() and digits.isdigit():
                highest = max(highest, int(digits))
    return highest + 1


def save_png_batch(
    images: torch.Tensor,
    root: Path,
    filename_prefix: str,
    *,
    folder_type: str,
    compress_level: int,
    text_chunks: dict[str, str],
) -> list[dict[str, str]]:
    """Write each image of an IMAGE batch as ``{prefix}_{counter:05}_.png``; returns ComfyUI's ui entries.

    Files are created exclusively, so concurrent savers into one folder never overwrite each other.
    """
    target = resolve_save_target(root, filename_prefix, images.shape[2], images.shape[1])
    counter = target.counter
    results = []
    for batch_number, image in enumerate(images):
        data = encode_png(to_uint8(image), text_chunks, compress_level)
        stem = target.filename.replace("%batch_num%", str(batch_number))
        file, counter = write_new_file(target.folder, stem, counter, "png", data)
        results.append({"filename": file, "subfolder": target.subfolder, "type": folder_type})
        counter += 1
    return results


def write_new_file(folder: Path, stem: str, counter: int, extension: str, data: bytes) -> tuple[str, int]:
    """Write ``data`` as ``{stem}_{counter:05}_.{extension}``, the counter raised past files that exist
    (created exclusively, so concurrent savers never overwrite each other); returns the name and counter."""
    while True:
        file = f"{stem}_{counter:05}_.{extension}"
        try:
            with open(folder / file, "xb") as handle:
                handle.write(data)
            return file, counter
        except FileExistsError:
            counter += 1


def png_text_chunks(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> dict[str, str]:
    """The metadata ComfyUI embeds: ``prompt`` and each ``extra_pnginfo`` key (``workflow`` ...) as JSON."""
    chunks = {} if prompt is None else {"prompt": json.dumps(prompt)}
    for key, value in (extra_pnginfo or {}).items():
        chunks[key] = json.dumps(value)
    return chunks


def file_sha256(image: str) -> str:
    digest = hashlib.sha256()
    with open(context.current().resolve_input(image), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SaveImage:
    FOLDER_TYPE = "output"
    COMPRESS_LEVEL = 4

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting information "
                        "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def _root(self) -> Path:
        return context.current().output_dir

    def _prefix(self, filename_prefix: str) -> str:
        return filename_prefix

    def save_images(
        self,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        results = save_png_batch(
            images,
            self._root(),
            self._prefix(filename_prefix),
            folder_type=self.FOLDER_TYPE,
            compress_level=self.COMPRESS_LEVEL,
            text_chunks=png_text_chunks(prompt, extra_pnginfo),
        )
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    FOLDER_TYPE = "temp"
    COMPRESS_LEVEL = 1
    DESCRIPTION = "Preview the images without saving them to the ComfyUI output directory."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def _root(self) -> Path:
        return context.current().temp_dir

    def _prefix(self, filename_prefix: str) -> str:
        return filename_prefix + "_temp_" + "".join(random.choices(string.ascii_lowercase, k=5))


class LoadImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": input_files()}}

    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    CATEGORY = "image"

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_image(context.current().resolve_input(image), label=image)

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return file_sha256(image)


class LoadImageMask:
    CHANNELS = ["alpha", "red", "green", "blue"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": input_files(), "channel": (cls.CHANNELS,)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"
    CATEGORY = "mask"

    def load_image(self, image: str, channel: str) -> tuple[torch.Tensor]:
        """One channel of the first frame; ``alpha`` is inverted (1 = transparent) as in ComfyUI."""
        decoded = decode_frames(context.current().resolve_input(image), label=image, first_frame_only=True)
        if channel != "alpha":
            return (decoded.rgb[..., self.CHANNELS.index(channel) - 1].clone(),)
        if decoded.alpha is None:
            return (torch.zeros(decoded.rgb.shape[:3], dtype=torch.float32),)
        return (1.0 - decoded.alpha,)

    @classmethod
    def IS_CHANGED(cls, image: str, channel: str) -> str:
        return file_sha256(image)


NODE_CLASS_MAPPINGS = {
    "LoadImage": LoadImage,
    "LoadImageMask": LoadImageMask,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImage": "Load Image",
    "LoadImageMask": "Load Image (as Mask)",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
}
