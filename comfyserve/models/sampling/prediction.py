"""How a UNet's input is scaled and its output read as a denoised ``x0`` (ComfyUI's EPS, V_PREDICTION, LCM,
X0 and IMG_TO_IMG model-sampling types), for ``sigma_data = 1``."""

from __future__ import annotations

import math

import torch

PREDICTIONS: tuple[str, ...] = ("eps", "v_prediction", "lcm", "x0", "img_to_img")
LCM_SIGMA_DATA = 0.5
LCM_TIMESTEP_SCALING = 10.0


def input_scale(prediction: str, sigma: float) -> float:
    """The factor ``c_in`` applied to ``x`` before the UNet sees it."""
    return 1.0 if prediction == "img_to_img" else 1.0 / math.sqrt(sigma * sigma + 1.0)


def to_denoised(prediction: str, x: torch.Tensor, output: torch.Tensor, sigma: float, timestep: float) -> torch.Tensor:
    """The denoised estimate from the UNet's ``output`` at noise level ``sigma`` for the unscaled input ``x``."""
    if prediction == "eps":
        return x - output * sigma
    if prediction == "v_prediction":
        variance = sigma * sigma + 1.0
        return x / variance - output * (sigma / math.sqrt(variance))
    if prediction == "lcm":
        scaled = timestep * LCM_TIMESTEP_SCALING
        c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
        c_out = scaled / math.sqrt(scaled**2 + LCM_SIGMA_DATA**2)
        return c_out * (x - output * sigma) + c_skip * x
    if prediction in ("x0", "img_to_img"):
        return output
    raise ValueError(f"unknown prediction type {prediction!r}; expected one of {', '.join(PREDICTIONS)}")
