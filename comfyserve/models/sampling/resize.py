"""Resizing latents and masks the way ComfyUI does: spatially (``common_upscale``, bislerp) and in batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

UPSCALE_METHODS: tuple[str, ...] = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
CROP_METHODS: tuple[str, ...] = ("disabled", "center")


def center_crop_to_aspect(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop the last two dims symmetrically so their aspect ratio matches ``width / height``."""
    old_height, old_width = samples.shape[-2], samples.shape[-1]
    old_aspect, new_aspect = old_width / old_height, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_width - old_width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_height - old_height * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_height - y * 2).narrow(-1, x, old_width - x * 2)


def upscale(samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """Resize ``[B, C, H, W]`` to ``[B, C, height, width]``; ``crop="center"`` keeps the aspect ratio."""
    if crop == "center":
        samples = center_crop_to_aspect(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def _slerp(start: torch.Tensor, end: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the rows of ``[N, C]`` batches, norms interpolated linearly."""
    start_norm = start.norm(dim=-1, keepdim=True)
    end_norm = end.norm(dim=-1, keepdim=True)
    start_unit = torch.where(start_norm == 0, 0.0, start / start_norm)
    end_unit = torch.where(end_norm == 0, 0.0, end / end_norm)
    dot = (start_unit * end_unit).sum(-1)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    weight_start = (torch.sin((1.0 - ratio.squeeze(1)) * omega) / sin_omega).unsqueeze(1)
    weight_end = (torch.sin(ratio.squeeze(1) * omega) / sin_omega).unsqueeze(1)
    result = (weight_start * start_unit + weight_end * end_unit) * (start_norm * (1.0 - ratio) + end_norm * ratio)
    same = (dot > 1 - 1e-5).unsqueeze(1)
    opposite = (dot < 1e-5 - 1).unsqueeze(1)
    result = torch.where(same, start, result)
    return torch.where(opposite, start * (1.0 - ratio) + end * ratio, result)


def _bislerp_axis(samples: torch.Tensor, new_length: int) -> torch.Tensor:
    """Slerp along the last dim between the two source cells that bilinear sampling would blend."""
    batch, channels, rows, length = samples.shape
    positions = torch.arange(length, dtype=torch.float32, device=samples.device).reshape(1, 1, 1, -1)
    positions = F.interpolate(positions, size=(1, new_length), mode="bilinear")
    ratios = (positions - positions.floor()).reshape(1, 1, 1, -1)
    low = positions.to(torch.int64)
    high = (low + 1).clamp(max=length - 1)
    gather_low = samples.gather(-1, low.expand(batch, channels, rows, -1))
    gather_high = samples.gather(-1, high.expand(batch, channels, rows, -1))
    flat_low = gather_low.movedim(1, -1).reshape(-1, channels)
    flat_high = gather_high.movedim(1, -1).reshape(-1, channels)
    flat_ratio = ratios.expand(batch, 1, rows, -1).movedim(1, -1).reshape(-1, 1)
    result = _slerp(flat_low, flat_high, flat_ratio)
    return result.reshape(batch, rows, new_length, channels).movedim(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resampling that slerps channel vectors instead of averaging them (keeps latent norms)."""
    original_dtype = samples.dtype
    result = _bislerp_axis(samples.float(), width)
    result = _bislerp_axis(result.movedim(-1, -2), height).movedim(-1, -2)
    return result.to(original_dtype)


def resize_to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pick batch items evenly to reach ``batch_size`` (ComfyUI's ``resize_to_batch_size``)."""
    size = tensor.shape[0]
    if size == batch_size:
        return tensor
    if batch_size <= 1:
        return tensor[:batch_size]
    if batch_size < size:
        scale = (size - 1) / (batch_size - 1)
        indices = [min(round(i * scale), size - 1) for i in range(batch_size)]
    else:
        scale = size / batch_size
        indices = [min(math.floor((i + 0.5) * scale), size - 1) for i in range(batch_size)]
    return tensor[indices]


def repeat_to_batch(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Repeat (or cut) the batch to ``batch_size`` items (ComfyUI's ``repeat_to_batch_size``)."""
    size = tensor.shape[0]
    if size > batch_size:
        return tensor[:batch_size]
    if size < batch_size:
        repeats = [math.ceil(batch_size / size)] + [1] * (tensor.ndim - 1)
        return tensor.repeat(repeats)[:batch_size]
    return tensor
