"""The exponential-integrator SDE solvers worked out in the variance-preserving scaling for an eps model:
ER-SDE-Solver-3 and SEEDS-2/3, with their coefficient integrals (ComfyUI's ``er_sde``, ``seeds_2``, ``seeds_3``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from comfyserve.models.sampling.run import Run

NoiseScaler = Callable[[torch.Tensor], torch.Tensor]


def _er_scale(value: torch.Tensor) -> torch.Tensor:
    """ER-SDE's default noise scaler ``x (e^(x^0.3) + 10)``."""
    return value * ((value**0.3).exp() + 10.0)


def er_sde(
    run: Run,
    x: torch.Tensor,
    max_stage: int = 3,
    s_noise: float = 1.0,
    noise_scaler: NoiseScaler = _er_scale,
    points: int = 200,
) -> torch.Tensor:
    """ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169), VP data prediction for an eps model (lambda is
    sigma): a first-order step scaled by the noise scaler's ratio, then (up to ``max_stage``) corrections from
    the first and second divided differences of the prediction, their integrals taken over ``points`` samples of
    the step in float32; fresh noise times ``s_noise`` keeps the marginal variance (none drawn at 0)."""
    sigmas = torch.tensor(run.sigmas, dtype=torch.float32)
    grid = torch.arange(0, points, dtype=torch.float32)
    previous: torch.Tensor | None = None
    previous_d: torch.Tensor | None = None
    for i in range(run.steps):
        denoised = run.denoise(x, i)
        if run.sigmas[i + 1] == 0:
            x = denoised
            previous = denoised
            continue
        lam_s, lam_t = sigmas[i], sigmas[i + 1]
        ratio = float(noise_scaler(lam_t) / noise_scaler(lam_s))
        x = ratio * x + (1 - ratio) * denoised
        if i >= 1 and max_stage >= 2:
            assert previous is not None
            dt = lam_t - lam_s
            step = -dt / points
            positions = lam_t + grid * step
            scaled = noise_scaler(positions)
            first = float(torch.sum(1 / scaled) * step)
            d = (denoised - previous) / float(lam_s - sigmas[i - 1])
            x = x + float(dt + first * noise_scaler(lam_t)) * d
            if i >= 2 and max_stage >= 3 and previous_d is not None:
                second = float(torch.sum((positions - lam_s) / scaled) * step)
                u = (d - previous_d) / float((lam_s - sigmas[i - 2]) / 2)
                x = x + float(dt**2 / 2 + second * noise_scaler(lam_t)) * u
            previous_d = d
        if s_noise > 0:
            spread = (lam_t**2 - lam_s**2 * ratio**2).sqrt().nan_to_num(nan=0.0)
            x = x + run.noise(run.sigmas[i], run.sigmas[i + 1]) * s_noise * float(spread)
        previous = denoised
    return x


def reverse_time_sde_scaler(eta: float) -> NoiseScaler:
    """The noise scaler ``x^(eta + 1)`` of ER-SDE's reverse-time SDE (eta 0: the ODE)."""
    return lambda value: value ** (eta + 1)


def _seeds(run: Run, x: torch.Tensor, fractions: tuple[float, ...]) -> torch.Tensor:
    """SEEDS-2/3 (Gonzalez et al. 2023, arXiv 2305.14267), VP data prediction with eta 1 for an eps model:
    exponential stages at the fractions of each step in log sigma, the stage noises chained so that the
    step's noise is one Brownian path."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma) - math.log(sigma_next)
        stage_sigmas = [math.exp(math.log(sigma) - f * h) for f in fractions]
        preds = [denoised]
        r_1 = fractions[0]
        sigma_1 = stage_sigmas[0]
        x_stage = (sigma_1 / sigma) * math.exp(-r_1 * h) * x - math.expm1(-2 * r_1 * h) * denoised
        noise = math.sqrt(-math.expm1(-2 * r_1 * h)) * run.noise(sigma, sigma_1)
        preds.append(run.model(x_stage + noise * sigma_1, sigma_1))
        last_fraction, last_sigma = r_1, sigma_1
        if len(fractions) == 2:  # SEEDS-3's middle stage
            r_2 = fractions[1]
            sigma_2 = stage_sigmas[1]
            a_2 = r_2 / r_1 * _phi_2(-2 * r_2 * h)
            a_1 = math.expm1(-2 * r_2 * h) - a_2
            x_stage = (sigma_2 / sigma) * math.exp(-r_2 * h) * x - (a_1 * denoised + a_2 * preds[1])
            segment = (r_1 - r_2) * h
            noise = noise * math.exp(segment) + math.sqrt(-math.expm1(2 * segment)) * run.noise(sigma_1, sigma_2)
            preds.append(run.model(x_stage + noise * sigma_2, sigma_2))
            last_fraction, last_sigma = r_2, sigma_2
        if len(fractions) == 1:
            mixed = denoised + (preds[1] - denoised) / (2 * r_1)
            x = (sigma_next / sigma) * math.exp(-h) * x - math.expm1(-2 * h) * mixed
        else:
            b_3 = _phi_2(-2 * h) / last_fraction
            b_1 = math.expm1(-2 * h) - b_3
            x = (sigma_next / sigma) * math.exp(-h) * x - (b_1 * denoised + b_3 * preds[2])
        segment = (last_fraction - 1) * h
        noise = noise * math.exp(segment) + math.sqrt(-math.expm1(2 * segment)) * run.noise(last_sigma, sigma_next)
        x = x + noise * sigma_next
    return x


def _phi_2(z: float) -> float:
    """``(e^z - 1 - z) / z``: h times the second phi function of exponential integrators, at ``z = -h``."""
    return (math.expm1(z) - z) / z


def seeds_2(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _seeds(run, x, (0.5,))


def seeds_3(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _seeds(run, x, (1 / 3, 2 / 3))
