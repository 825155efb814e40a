"""Small real images for tests (uploads and inputs get Pillow's checks at the edge)."""

from __future__ import annotations

import io

from PIL import Image


def png(size: tuple[int, int] = (4, 4), mode: str = "RGB", color: int | tuple[int, ...] = 0) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, "PNG")
    return buffer.getvalue()
