"""Classifier-free guidance formulas a model patch can put in place of ``uncond + cfg * (cond - uncond)``.

A :data:`~comfyserve.models.handles.CfgFunction` receives the noisy input ``x``, sigma, the cond and uncond
denoised predictions and the cfg scale, and returns what the guided prediction is ``x`` minus (ComfyUI's
``sampler_cfg_function`` convention, kept so that results match it to the bit).
"""

from __future__ import annotations

from functools import partial

import torch

from comfyserve.models.handles import CfgFunction


def guided(
    function: CfgFunction | None, x: torch.Tensor, sigma: float, cond: torch.Tensor, uncond: torch.Tensor, scale: float
) -> torch.Tensor:
    """The guided prediction: plain CFG, or ``x - function(...)`` when a model patch set one."""
    if function is None:
        return uncond + (cond - uncond) * scale
    return x - function(x, sigma, cond, uncond, scale)


def _to_v(x: torch.Tensor, scaled: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The v-prediction of a denoised estimate given as ``eps = x - denoised`` (``scaled`` is ``x / (s² + 1)``)."""
    return ((scaled - (x - eps)) * (sigma**2 + 1.0) ** 0.5) / sigma


def rescale_cfg(
    multiplier: float, x: torch.Tensor, sigma: float, cond: torch.Tensor, uncond: torch.Tensor, scale: float
) -> torch.Tensor:
    """RescaleCFG ("Common Diffusion Noise Schedules and Sample Steps are Flawed", section 3.4): CFG computed on
    v-predictions, its per-sample standard deviation rescaled to the cond's, blended by ``multiplier``."""
    s = torch.full((x.shape[0],) + (1,) * (x.ndim - 1), sigma, dtype=torch.float32, device=x.device)
    scaled = x / (s * s + 1.0)
    v_cond = _to_v(x, scaled, x - cond, s)
    v_uncond = _to_v(x, scaled, x - uncond, s)
    v_cfg = v_uncond + scale * (v_cond - v_uncond)
    dims = tuple(range(1, x.ndim))
    rescaled = v_cfg * (torch.std(v_cond, dim=dims, keepdim=True) / torch.std(v_cfg, dim=dims, keepdim=True))
    v_final = multiplier * rescaled + (1.0 - multiplier) * v_cfg
    return x - (scaled - v_final * s / (s * s + 1.0) ** 0.5)


def rescale_cfg_function(multiplier: float) -> CfgFunction:
    return partial(rescale_cfg, multiplier)
