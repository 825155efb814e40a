"""ComfyUI's animated image savers (``comfy_extras/nodes_images.py``): SaveAnimatedWEBP and SaveAnimatedPNG.

Each writes the whole batch as one file, ``{prefix}_{counter:05}_.webp`` / ``.png``, every frame shown for
``int(1000 / fps)`` ms, through Pillow as ComfyUI does. Metadata as ComfyUI embeds it: in the WEBP's EXIF
(the prompt as ``"prompt:{json}"`` in tag 0x0110, each ``extra_pnginfo`` entry as ``"{key}:{json}"`` from tag
0x010F down), in the APNG as ``comf`` chunks after the image data (``key\\0json``). Both report
``{"images": [file], "animated": [flag]}``: always true for APNG, for WEBP true unless the batch is one image.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfyserve.engine import context
from comfyserve.engine.errors import NodeInputError
from comfyserve.nodes.image_io import resolve_save_target, write_new_file
from comfyserve.nodes.imagefile import to_uint8

CATEGORY = "image/animation"
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}
EXIF_PROMPT_TAG = 0x0110  # Model
EXIF_FIRST_EXTRA_TAG = 0x010F  # Make, then down
FPS_INPUT = ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01})
HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


def frames_of(images: Any) -> list[Image.Image]:
    """Each image of an IMAGE batch as a Pillow image (RGB, or RGBA for four channels)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise NodeInputError(f"images must be a non-empty IMAGE batch [frames, height, width, channels], got {shape}")
    if images.shape[-1] not in (3, 4):
        raise NodeInputError(f"an animated image needs 3 or 4 channels per pixel, got {images.shape[-1]}")
    return [Image.fromarray(to_uint8(image)) for image in images]


def frame_duration_ms(fps: float) -> int:
    """How long each frame shows: ``int(1000 / fps)`` milliseconds."""
    return int(1000.0 / fps)


def webp_exif(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> Image.Exif:
    exif = Image.Exif()
    if prompt is not None:
        exif[EXIF_PROMPT_TAG] = f"prompt:{json.dumps(prompt)}"
    for offset, (key, value) in enumerate((extra_pnginfo or {}).items()):
        exif[EXIF_FIRST_EXTRA_TAG - offset] = f"{key}:{json.dumps(value)}"
    return exif


def apng_chunks(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    info = PngInfo()
    entries = ([] if prompt is None else [("prompt", prompt)]) + list((extra_pnginfo or {}).items())
    for key, value in entries:
        try:
            data = key.encode("latin-1") + b"\0" + json.dumps(value).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise NodeInputError(f"metadata key {key!r} cannot be written to a PNG chunk (latin-1 only)") from exc
        info.add(b"comf", data, after_idat=True)
    return info


def _save(frames: list[Image.Image], filename_prefix: str, extension: str, **options: Any) -> dict[str, str]:
    """Encode ``frames`` as one animated file in the output folder; its ui entry."""
    width, height = frames[0].size
    target = resolve_save_target(context.current().output_dir, filename_prefix, width, height)
    buffer = io.BytesIO()
    frames[0].save(buffer, format=extension.upper(), save_all=True, append_images=frames[1:], **options)
    file, _ = write_new_file(target.folder, target.filename, target.counter, extension, buffer.getvalue())
    return {"filename": file, "subfolder": target.subfolder, "type": "output"}


class SaveAnimatedWEBP:
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": FPS_INPUT,
                "lossless": ("BOOLEAN", {"default": True}),
                "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
                "method": (list(WEBP_METHODS),),
            },
            "hidden": HIDDEN,
        }

    def save_images(
        self,
        images: torch.Tensor,
        fps: float,
        filename_prefix: str,
        lossless: bool,
        quality: int,
        method: str,
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        frames = frames_of(images)
        saved = _save(
            frames,
            filename_prefix,
            "webp",
            duration=frame_duration_ms(fps),
            exif=webp_exif(prompt, extra_pnginfo),
            lossless=lossless,
            quality=quality,
            method=WEBP_METHODS[method],
        )
        return {"ui": {"images": [saved], "animated": (len(frames) != 1,)}}


class SaveAnimatedPNG:
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "ComfyUI"}),
                "fps": FPS_INPUT,
                "compress_level": ("INT", {"default": 4, "min": 0, "max": 9}),
            },
            "hidden": HIDDEN,
        }

    def save_images(
        self,
        images: torch.Tensor,
        fps: float,
        compress_level: int,
        filename_prefix: str = "ComfyUI",
        prompt: dict[str, Any] | None = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        saved = _save(
            frames_of(images),
            filename_prefix,
            "png",
            duration=frame_duration_ms(fps),
            pnginfo=apng_chunks(prompt, extra_pnginfo),
            compress_level=compress_level,
        )
        return {"ui": {"images": [saved], "animated": (True,)}}


NODE_CLASS_MAPPINGS = {"SaveAnimatedWEBP": SaveAnimatedWEBP, "SaveAnimatedPNG": SaveAnimatedPNG}
