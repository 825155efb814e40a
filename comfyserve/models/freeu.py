"""FreeU (Si et al., "FreeU: Free Lunch in Diffusion U-Net") as ComfyUI's FreeU and FreeU_V2 nodes apply it.

An output-block patch: where ``h`` has 4x or 2x the UNet's base channel count (every output block at those
widths, not only the first two up blocks as in diffusers' FreeU), the first half of ``h``'s channels is scaled
by ``b1`` / ``b2`` (V2: by ``1 + (b - 1) * m``, ``m`` the channel mean of ``h`` min-max normalised per sample)
and the skip features' lowest frequencies by ``s1`` / ``s2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def fourier_filter(x: torch.Tensor, threshold: int, scale: float) -> torch.Tensor:
    """``x`` with the centred ``2 * threshold`` square of its (shifted) 2-D spectrum multiplied by ``scale``."""
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    height, width = spectrum.shape[-2:]
    mask = torch.ones(spectrum.shape, device=x.device)
    row, column = height // 2, width // 2
    mask[..., row - threshold : row + threshold, column - threshold : column + threshold] = scale
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1)), dim=(-2, -1)).real
    return filtered.to(x.dtype)


def _normalised_channel_mean(h: torch.Tensor) -> torch.Tensor:
    mean = h.mean(1).unsqueeze(1)
    flat = mean.view(mean.shape[0], -1)
    low = torch.min(flat, dim=-1, keepdim=True)[0][..., None, None]
    high = torch.max(flat, dim=-1, keepdim=True)[0][..., None, None]
    return (mean - low) / (high - low)


@dataclass(frozen=True)
class FreeUPatch:
    """The output-block patch of a UNet whose first block has ``model_channels`` channels."""

    model_channels: int
    b1: float
    b2: float
    s1: float
    s2: float
    v2: bool = False

    def scales(self, channels: int) -> tuple[float, float] | None:
        """(backbone factor, skip factor) for an ``h`` of ``channels`` channels; ``None``: left as it is."""
        if channels == self.model_channels * 4:
            return self.b1, self.s1
        if channels == self.model_channels * 2:
            return self.b2, self.s2
        return None

    def __call__(self, h: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scales = self.scales(int(h.shape[1]))
        if scales is None:
            return h, skip
        backbone, skip_scale = scales
        half = h.shape[1] // 2
        factor = (backbone - 1) * _normalised_channel_mean(h) + 1 if self.v2 else backbone
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_filter(skip, threshold=1, scale=skip_scale)
