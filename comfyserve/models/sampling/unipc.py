"""UniPC (Zhao et al. 2023): multistep predictor-corrector in the data prediction, as ComfyUI runs it.

ComfyUI solves in the variance-preserving scaling with sigma as its time variable; dividing every update by
``alpha_t`` gives the same numbers in the k-diffusion scaling used here, where the data prediction is the
denoiser itself and the half-log-SNR is ``lambda = -log(sigma)``. Order 3 at most (2 for 3 steps, 1 for fewer),
lowered again over the last steps; the corrector runs after every update but the last, and its model call
is reused by the next predictor, so ``n`` steps cost ``n`` model calls. The last sigma, when below 1e-3, is
replaced by 1e-3 (the sample is returned at that noise level, as in ComfyUI).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy
import torch

from comfyserve.models.sampling.run import Denoiser, Run

FINAL_SIGMA = 0.001


def _coefficients(
    ratios: list[float], hh: float, order: int, variant: Literal["bh1", "bh2"]
) -> tuple[float, numpy.ndarray, numpy.ndarray]:
    """``B(h)`` and the predictor / corrector weights ``rho`` of a UniPC-B(h) update of ``order``."""
    b_h = hh if variant == "bh1" else math.expm1(hh)
    rks = numpy.array([*ratios, 1.0])
    rows, rhs = [], []
    h_phi_k = math.expm1(hh) / hh - 1
    factorial = 1
    for i in range(1, order + 1):
        rows.append(rks ** (i - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    matrix, vector = numpy.stack(rows), numpy.array(rhs)
    if order == 2:
        rhos_p = numpy.array([0.5])
    elif order > 2:
        rhos_p = numpy.linalg.solve(matrix[:-1, :-1], vector[:-1])
    else:
        rhos_p = numpy.zeros(0)
    rhos_c = numpy.array([0.5]) if order == 1 else numpy.linalg.solve(matrix, vector)
    return b_h, rhos_p, rhos_c


def _update(
    model: Denoiser,
    x: torch.Tensor,
    history: list[tuple[float, torch.Tensor]],
    sigma: float,
    order: int,
    variant: Literal["bh1", "bh2"],
    use_corrector: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniPC step from the newest history point to ``sigma``; returns ``x`` and the corrector's model value."""
    sigma_prev, model_prev = history[-1]
    h = math.log(sigma_prev) - math.log(sigma)
    ratios: list[float] = []
    differences: list[torch.Tensor] = []
    for k in range(1, order):
        sigma_k, model_k = history[-(k + 1)]
        ratio = (math.log(sigma_prev) - math.log(sigma_k)) / h
        ratios.append(ratio)
        differences.append((model_k - model_prev) / ratio)
    hh = -h
    b_h, rhos_p, rhos_c = _coefficients(ratios, hh, order, variant)
    base = (sigma / sigma_prev) * x - math.expm1(hh) * model_prev
    predicted = base - b_h * _weighted(rhos_p, differences) if differences else base
    if not use_corrector:
        return predicted, None
    model_t = model(predicted, sigma)
    correction = _weighted(rhos_c, [*differences, model_t - model_prev])
    return base - b_h * correction, model_t


def _weighted(weights: numpy.ndarray, tensors: list[torch.Tensor]) -> torch.Tensor:
    total = float(weights[0]) * tensors[0]
    for weight, tensor in zip(weights[1:], tensors[1:], strict=True):
        total = total + float(weight) * tensor
    return total


def unipc(run: Run, x: torch.Tensor, variant: Literal["bh1", "bh2"] = "bh1") -> torch.Tensor:
    """Sample from ``sigmas[0]`` to ``sigmas[-1]`` (floored at 1e-3), reporting each step to the callback."""
    times = [*run.sigmas[:-1], max(run.sigmas[-1], FINAL_SIGMA)]
    steps = len(times) - 1
    if steps < 1:
        return x
    max_order = max(1, min(3, steps - 1))
    history = [(times[0], run.denoise(x, 0))]
    for i in range(1, steps + 1):
        order = min(max_order, i, steps + 1 - i)
        x, model_x = _update(run.model, x, history, times[i], order, variant, use_corrector=i < steps)
        if model_x is not None:
            history = [*history, (times[i], model_x)][-max_order:]
            run.callback(i)
    return x
