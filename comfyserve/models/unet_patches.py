"""Output-block patches on a diffusers ``UNet2DConditionModel`` (ComfyUI's ``output_block_patch``).

ComfyUI's UNet hands each output block's input features (``h``) and the skip connection popped for it to every
patch before concatenating them. In diffusers that concatenation is the input of each up-block resnet, so a
forward pre-hook on those resnets splits it, applies the patches and joins the result. The hooks live only for
one sampling run and act only in the context that installed them: the UNet is shared by every clone of the
model and by concurrent jobs, which must not see another's patches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

import torch

from comfyserve.models.handles import OutputBlockPatch

_ACTIVE: ContextVar[object | None] = ContextVar("output_block_patches", default=None)


def output_block_inputs(unet: Any) -> list[tuple[torch.nn.Module, int]]:
    """Each output block's resnet with the channel count of ``h``, the part of its input before the skip."""
    blocks: list[tuple[torch.nn.Module, int]] = []
    channels = int(unet.mid_block.resnets[-1].out_channels)
    for block in unet.up_blocks:
        for resnet in block.resnets:
            blocks.append((resnet, channels))
            channels = int(resnet.out_channels)
    return blocks


@contextlib.contextmanager
def output_block_patches(unet: Any, patches: Sequence[OutputBlockPatch]) -> Iterator[None]:
    """Within the block, calls of ``unet`` from this context apply ``patches`` (in order) at every output block."""
    if not patches:
        yield
        return
    token = object()
    widths: dict[torch.nn.Module, int] = {}

    def patch(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if _ACTIVE.get() is not token:
            return None
        features, width = args[0], widths[module]
        h, skip = features[:, :width], features[:, width:]
        for apply in patches:
            h, skip = apply(h, skip)
        return (torch.cat([h, skip], dim=1), *args[1:])

    handles = []
    for resnet, width in output_block_inputs(unet):
        widths[resnet] = width
        handles.append(resnet.register_forward_pre_hook(patch))
    reset = _ACTIVE.set(token)
    try:
        yield
    finally:
        _ACTIVE.reset(reset)
        for handle in handles:
            handle.remove()
