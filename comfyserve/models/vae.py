"""Pixels <-> latents with an :class:`Autoencoder`, whole or in blended tiles.

IMAGE is ``[B, H, W, C]`` float in 0..1; LATENT samples are ``[B, 4, H/8, W/8]`` already multiplied by the
VAE's scale factor (handles.py). Encoding crops the image to a multiple of 8 around its centre and uses the
first three channels (as ComfyUI's ``VAE.encode``), and takes the mean of the latent distribution, so the
same image always gives the same latent. Results come back on the CPU as float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.device import policy
from comfyserve.models.handles import Autoencoder
from comfyserve.models.memory import on_device

_BATCH = 4


def crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """``[B, H, W, C]`` cropped around the centre to the largest multiple of ``multiple`` per side."""
    h, w = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    if h == 0 or w == 0:
        raise NodeInputError(
            f"the image is {pixels.shape[2]}x{pixels.shape[1]} pixels; the VAE needs at least {multiple}x{multiple}"
        )
    top, left = (pixels.shape[1] % multiple) // 2, (pixels.shape[2] % multiple) // 2
    return pixels[:, top : top + h, left : left + w, :]


def _check_pixels(pixels: torch.Tensor) -> None:
    if pixels.ndim != 4 or pixels.shape[-1] < 3:
        raise NodeInputError(f"expected an IMAGE [batch, height, width, channels>=3], got shape {list(pixels.shape)}")


def _check_latent(vae: Autoencoder, latent: torch.Tensor) -> None:
    if latent.ndim != 4 or latent.shape[1] != vae.latent_channels:
        raise NodeInputError(
            f"this VAE decodes latents of shape [batch, {vae.latent_channels}, height, width], got {list(latent.shape)}"
        )


def _run(vae: Autoencoder, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    module = vae.vae
    dtype = next(module.parameters()).dtype
    with on_device(module), torch.inference_mode():
        parts = [fn(chunk.to(policy().device, dtype)).float().cpu() for chunk in x.split(_BATCH)]
    return torch.cat(parts)


def _encoder(vae: Autoencoder) -> Callable[[torch.Tensor], torch.Tensor]:
    def encode(x: torch.Tensor) -> torch.Tensor:
        return vae.vae.encode(x).latent_dist.mode() * vae.scaling_factor

    return encode


def _decoder(vae: Autoencoder) -> Callable[[torch.Tensor], torch.Tensor]:
    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.vae.decode(z / vae.scaling_factor).sample

    return decode


def _to_nchw(pixels: torch.Tensor, downscale: int) -> torch.Tensor:
    _check_pixels(pixels)
    pixels = crop_to_multiple(pixels, downscale)[..., :3]
    return pixels.movedim(-1, 1).float() * 2.0 - 1.0


def _to_image(decoded: torch.Tensor) -> torch.Tensor:
    return ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).contiguous()


def encode_pixels(vae: Autoencoder, pixels: torch.Tensor) -> torch.Tensor:
    """IMAGE -> LATENT samples (scaled)."""
    return _run(vae, _encoder(vae), _to_nchw(pixels, vae.downscale))


def decode_latent(vae: Autoencoder, latent: torch.Tensor) -> torch.Tensor:
    """LATENT samples (scaled) -> IMAGE clamped to 0..1."""
    _check_latent(vae, latent)
    return _to_image(_run(vae, _decoder(vae), latent))


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    return [*range(0, length - tile, stride), length - tile]


def _feather(height: int, width: int, ramp: int) -> torch.Tensor:
    """A tile's blending weight: 1 inside, falling linearly to 1/ramp at every border."""
    mask = torch.ones(height, width)
    for t in range(min(ramp, height // 2, width // 2)):
        w = (t + 1) / ramp
        mask[t, :] *= w
        mask[-1 - t, :] *= w
        mask[:, t] *= w
        mask[:, -1 - t] *= w
    return mask


def tiled(
    x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int, overlap: int, scale: float
) -> torch.Tensor:
    """Apply ``fn`` (``[B, C, h, w] -> [B, C', h*scale, w*scale]``) tile by tile, blending the overlaps."""
    height, width = x.shape[-2:]
    stride = max(1, tile - overlap)
    out: torch.Tensor | None = None
    weight = torch.zeros(1, 1, round(height * scale), round(width * scale))
    ramp = max(1, round(overlap * scale))
    for top in _starts(height, tile, stride):
        for left in _starts(width, tile, stride):
            piece = fn(x[..., top : top + tile, left : left + tile])
            if out is None:
                out = torch.zeros(x.shape[0], piece.shape[1], *weight.shape[-2:])
            mask = _feather(piece.shape[-2], piece.shape[-1], ramp)
            y0, x0 = round(top * scale), round(left * scale)
            region = (..., slice(y0, y0 + piece.shape[-2]), slice(x0, x0 + piece.shape[-1]))
            out[region] += piece * mask
            weight[region] += mask
    assert out is not None
    return out / weight


def encode_pixels_tiled(vae: Autoencoder, pixels: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
    """Like :func:`encode_pixels`, in ``tile_size`` pixel tiles overlapping by ``overlap`` pixels."""
    x, step = _to_nchw(pixels, vae.downscale), vae.downscale
    tile = max(step, tile_size // step * step)
    lap = min(overlap // step * step, tile - step)
    encode = _encoder(vae)
    return tiled(x, lambda t: _run(vae, encode, t), tile, lap, 1 / step)


def decode_latent_tiled(vae: Autoencoder, latent: torch.Tensor, tile_size: int, overlap: int) -> torch.Tensor:
    """Like :func:`decode_latent`, in tiles of ``tile_size`` pixels (``tile_size / 8`` latent cells)."""
    _check_latent(vae, latent)
    decode = _decoder(vae)
    tile = max(1, tile_size // vae.downscale)
    lap = min(overlap // vae.downscale, tile - 1)
    return _to_image(tiled(latent, lambda t: _run(vae, decode, t), tile, lap, vae.downscale))
