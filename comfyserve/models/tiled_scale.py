"""Running an image model over an image in overlapping tiles, as ComfyUI's ``comfy.utils.tiled_scale`` does.

Tiles start every ``tile - overlap`` pixels from the top-left corner; a tile reaching past the far edge is cut
short there (so the last one may be narrower). Each tile's output is weighted by a mask that ramps linearly
over ``overlap * scale`` output pixels at each of its sides (``(t + 1) / ramp`` at the ``t``-th pixel from a
side), and the overlaps are blended by those weights. An input no larger than one tile is run whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

ImageFn = Callable[[torch.Tensor], torch.Tensor]  # [1, C, h, w] -> [1, C', h * scale, w * scale]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles start along one side of ``length`` pixels."""
    if length <= tile:
        return [0]
    return [max(0, min(length - overlap, start)) for start in range(0, length - overlap, tile - overlap)]


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    """Tiles per image (ComfyUI's ``get_tiled_scale_steps``)."""
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def _blend_mask(piece: torch.Tensor, ramp: int) -> torch.Tensor:
    mask = torch.ones_like(piece)
    for dim in (2, 3):
        if ramp >= mask.shape[dim]:
            continue
        for t in range(ramp):
            weight = (t + 1) / ramp
            mask.narrow(dim, t, 1).mul_(weight)
            mask.narrow(dim, mask.shape[dim] - 1 - t, 1).mul_(weight)
    return mask


@torch.inference_mode()
def tiled_scale(
    samples: torch.Tensor,
    fn: ImageFn,
    tile: int,
    overlap: int,
    scale: float,
    out_channels: int = 3,
    on_tile: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """``fn`` applied to ``samples`` ``[B, C, H, W]`` one image and one ``tile`` x ``tile`` tile at a time; the
    result ``[B, out_channels, round(H * scale), round(W * scale)]`` is on the CPU. ``on_tile`` runs after each
    tile (progress)."""
    height, width = samples.shape[2:]
    size = (round(height * scale), round(width * scale))
    output = torch.empty(samples.shape[0], out_channels, *size)
    ramp = round(overlap * scale)
    for b in range(samples.shape[0]):
        image = samples[b : b + 1]
        if height <= tile and width <= tile:
            output[b : b + 1] = fn(image).cpu()
            on_tile()
            continue
        total = torch.zeros(1, out_channels, *size)
        weights = torch.zeros(1, out_channels, *size)
        for top, left in itertools.product(tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)):
            piece = fn(image[..., top : top + tile, left : left + tile]).cpu()
            mask = _blend_mask(piece, ramp)
            y, x = round(top * scale), round(left * scale)
            region = (..., slice(y, y + piece.shape[2]), slice(x, x + piece.shape[3]))
            total[region] += piece * mask
            weights[region] += mask
            on_tile()
        output[b : b + 1] = total / weights
    return output
