"""Tiny random-weight upscale models in Real-ESRGAN's RRDBNet layout (``conv_first``, ``body.N.rdbM.convK``,
``conv_up*``), the layout spandrel detects as ESRGAN, for ``make-test-models``.

The scale comes from the file name (``x8``, ``4x`` ...; 4 when it names none) and is a power of two: one
``conv_upN`` per doubling. The model has 8 filters and one RRDB block (spandrel's grow channels are fixed
at 32), about 0.4 MB in fp16.
"""

from __future__ import annotations

import math
import re

import torch

StateDict = dict[str, torch.Tensor]

FILTERS, BLOCKS, GROW = 8, 1, 32
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:x(\d+)|(\d+)x)(?=[^0-9]|$)", re.IGNORECASE)


def scale_from_name(name: str) -> int:
    """The scale a file name states (``RealESRGAN_x8.pth`` -> 8, ``4x-UltraSharp.pth`` -> 4), else 4."""
    match = _SCALE_IN_NAME.search(name.rsplit("/", 1)[-1])
    return int(match.group(1) or match.group(2)) if match else 4


def _conv(sd: StateDict, name: str, out_ch: int, in_ch: int, gen: torch.Generator) -> None:
    std = 1.0 / math.sqrt(in_ch * 9)  # keeps activations of the random network in a useful range
    sd[f"{name}.weight"] = (std * torch.randn(out_ch, in_ch, 3, 3, generator=gen)).half()
    sd[f"{name}.bias"] = (0.01 * torch.randn(out_ch, generator=gen)).half()


def tiny_upscale_model(scale: int = 4, seed: int = 0) -> StateDict:
    """A random RRDBNet state dict that upscales RGB images ``scale`` times (1, 2, 4, 8 ...)."""
    if scale < 1 or scale & (scale - 1):
        raise ValueError(f"an RRDBNet upscale model's scale is a power of two, not {scale}")
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {}
    _conv(sd, "conv_first", FILTERS, 3, gen)
    for block in range(BLOCKS):
        for rdb in (1, 2, 3):
            for k in range(1, 6):
                _conv(sd, f"body.{block}.rdb{rdb}.conv{k}", GROW if k < 5 else FILTERS, FILTERS + (k - 1) * GROW, gen)
    _conv(sd, "conv_body", FILTERS, FILTERS, gen)
    for up in range(1, scale.bit_length()):
        _conv(sd, f"conv_up{up}", FILTERS, FILTERS, gen)
    _conv(sd, "conv_hr", FILTERS, FILTERS, gen)
    _conv(sd, "conv_last", 3, FILTERS, gen)
    sd["conv_last.bias"] += 0.5  # outputs centred in 0..1, so little of the image is clamped away
    return sd
