"""Image files in and out: safe decoding to ComfyUI's IMAGE/MASK tensors, PNG encoding with text chunks.

Decoding refuses decompression bombs and undecodable files with a :class:`NodeInputError` that names the
file; nothing here lets a Pillow exception or warning escape. The conversions follow ComfyUI's ``LoadImage``
and ``SaveImage`` (8-bit values divided by 255 on the way in, scaled by 255 and truncated on the way out).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from comfyserve.engine.errors import NodeInputError

# The most pixels one file may decode to, all kept frames together: MAX_RESOLUTION squared (16384 x 16384).
MAX_IMAGE_PIXELS = 2**28
# Pillow's own bomb check (warning above the limit, error above twice it) uses the same limit.
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
EMPTY_MASK_SIZE = 64  # ComfyUI's mask for an image without alpha: zeros of 64x64 per frame


@dataclass(frozen=True)
class DecodedImage:
    """The kept frames of a file: ``rgb`` is ``[N, H, W, 3]`` in 0..1, ``alpha`` is ``[N, H, W]`` (1 = opaque)
    or None when no frame carries transparency."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None


def decode_image(path: Path, *, label: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ComfyUI's ``LoadImage`` outputs for a file: IMAGE ``[N, H, W, 3]`` and MASK = 1 - alpha."""
    decoded = decode_frames(path, label=label)
    if decoded.alpha is None:
        frames = decoded.rgb.shape[0]
        return decoded.rgb, torch.zeros((frames, EMPTY_MASK_SIZE, EMPTY_MASK_SIZE), dtype=torch.float32)
    return decoded.rgb, 1.0 - decoded.alpha


def decode_frames(path: Path, *, label: str | None = None, first_frame_only: bool = False) -> DecodedImage:
    """Decode every frame that has the first frame's size (EXIF orientation applied), or only the first.

    ``label`` names the file in errors (default: the file name). 16-bit greyscale is read at full
    precision (value / 65535) rather than through 8 bits.
    """
    name = label if label is not None else path.name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                # MPO (multi-picture JPEG) holds alternative views, not frames: ComfyUI keeps the first.
                rgb, alpha = _read_frames(img, name, first_frame_only or img.format == "MPO")
    except NodeInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(name) from exc
    except UnidentifiedImageError as exc:
        raise NodeInputError(f"cannot decode image {name!r}: not a recognised image format") from exc
    except Exception as exc:  # Pillow raises many exception types on malformed data
        raise NodeInputError(f"cannot decode image {name!r}: {exc}") from exc
    rgb_tensor = torch.from_numpy(np.stack(rgb))
    if all(a is None for a in alpha):
        return DecodedImage(rgb_tensor, None)
    opaque = np.ones(rgb[0].shape[:2], dtype=np.float32)
    return DecodedImage(rgb_tensor, torch.from_numpy(np.stack([opaque if a is None else a for a in alpha])))


def _read_frames(img: Image.Image, name: str, first_only: bool) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    rgb: list[np.ndarray] = []
    alpha: list[np.ndarray | None] = []
    size: tuple[int, int] | None = None
    for frame in _frames(img, first_only):
        size = size or frame.size
        if frame.size != size:
            continue  # as ComfyUI: frames of another size are dropped
        if (len(rgb) + 1) * size[0] * size[1] > MAX_IMAGE_PIXELS:
            raise _too_large(name)
        rgb.append(_rgb(frame))
        alpha.append(_alpha(frame))
    if not rgb:
        raise NodeInputError(f"cannot decode image {name!r}: the file holds no frames")
    return rgb, alpha


def _frames(img: Image.Image, first_only: bool) -> Iterator[Image.Image]:
    for index, frame in enumerate(ImageSequence.Iterator(img)):
        if first_only and index > 0:
            return
        yield ImageOps.exif_transpose(frame)


def _rgb(frame: Image.Image) -> np.ndarray:
    if frame.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(frame, dtype=np.float32) / np.float32(65535.0), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / np.float32(255.0)


def _alpha(frame: Image.Image) -> np.ndarray | None:
    if "A" in frame.getbands():
        band = frame.getchannel("A")
    elif "transparency" in frame.info:
        band = frame.convert("RGBA").getchannel("A")
    else:
        return None
    return np.asarray(band, dtype=np.float32) / np.float32(255.0)


def _too_large(name: str) -> NodeInputError:
    return NodeInputError(f"image {name!r} is too large to decode (the limit is {MAX_IMAGE_PIXELS:,} pixels)")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """A 0..1 float tensor as 8-bit values the way ComfyUI saves them: times 255, clipped, truncated."""
    scaled = image.detach().to("cpu", torch.float32).numpy() * np.float32(255.0)
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)


def encode_png(image_hwc_uint8: np.ndarray, text_chunks: Mapping[str, str], compress_level: int) -> bytes:
    """A PNG of an ``[H, W, C]`` (C = 1, 3 or 4) or ``[H, W]`` uint8 array with one tEXt chunk per entry."""
    array = image_hwc_uint8
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise NodeInputError(f"cannot save an image of shape {tuple(image_hwc_uint8.shape)} as PNG")
    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return buffer.getvalue()
