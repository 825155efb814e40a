"""k-diffusion samplers in ComfyUI's formulation: a denoiser ``D(x, sigma) -> x0`` driven down a sigma list.

Each sampler takes a :class:`Run` and the starting ``x`` (noise at ``sigmas[0]`` already added) and returns
the sample at ``sigmas[-1]``. ``Run.denoise`` reports each step to the callback after the step's first model
call, as ComfyUI's samplers do. The solvers with their own machinery live beside it (``dpm_solver``, ``unipc``,
``sa_solver``, ``vp_sde``); this module holds the rest and the registry, :data:`SAMPLERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from numpy.polynomial import Polynomial

from comfyserve.models.sampling.dpm_solver import dpm_adaptive, dpm_fast
from comfyserve.models.sampling.run import Run
from comfyserve.models.sampling.sa_solver import sa_solver, sa_solver_pece
from comfyserve.models.sampling.unipc import unipc
from comfyserve.models.sampling.vp_sde import er_sde, seeds_2, seeds_3

NoiseKind = Literal["none", "gaussian", "brownian"]


def _derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    return (x - denoised) / sigma


def ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step into a deterministic part down to ``sigma_down`` and fresh noise of size ``sigma_up``."""
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2))
    return math.sqrt(sigma_to**2 - sigma_up**2), sigma_up


def euler(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 without churn: explicit Euler on the probability-flow ODE."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        x = x + _derivative(x, run.denoise(x, i), sigma) * (sigma_next - sigma)
    return x


def euler_ancestral(run: Run, x: torch.Tensor, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    for i in range(run.steps):
        sigma = run.sigmas[i]
        denoised = run.denoise(x, i)
        sigma_down, sigma_up = ancestral_step(sigma, run.sigmas[i + 1], eta)
        if sigma_down == 0:
            x = denoised
        else:
            x = x + _derivative(x, denoised, sigma) * (sigma_down - sigma)
            x = x + run.noise(sigma, run.sigmas[i + 1]) * s_noise * sigma_up
    return x


def _euler_cfg_pp(run: Run, x: torch.Tensor, eta: float, s_noise: float) -> torch.Tensor:
    """CFG++ (Chung et al. 2024) Euler: renoise the guided prediction with the unguided one's noise direction,
    ``x = D + sigma_down * (x - D_uncond) / sigma``; with ``eta`` fresh noise of ``sigma_up`` follows."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        if sigma_next == 0:
            x = denoised
            continue
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        x = denoised + sigma_down * _derivative(x, run.uncond(), sigma)
        if eta > 0 and s_noise > 0:
            x = x + run.noise(sigma, sigma_next) * s_noise * sigma_up
    return x


def euler_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _euler_cfg_pp(run, x, eta=0.0, s_noise=0.0)


def euler_ancestral_cfg_pp(run: Run, x: torch.Tensor, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    return _euler_cfg_pp(run, x, eta, s_noise)


def heun(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 1/2 without churn: Heun's second-order steps, Euler into sigma 0."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        d = _derivative(x, run.denoise(x, i), sigma)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _derivative(x_2, run.model(x_2, sigma_next), sigma_next)
            x = x + (d + d_2) / 2 * dt
    return x


def heunpp2(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Heun++ (sd-webui-samplers-scheduler): each step averages the derivatives at up to the next two sigmas
    (reached by Euler predictions), weighted by those sigmas over a multiple of the first; Heun before the last
    step, Euler on it."""
    end, first = run.sigmas[-1], run.sigmas[0]
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        d = _derivative(x, run.denoise(x, i), sigma)
        dt = sigma_next - sigma
        if sigma_next == end:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = _derivative(x_2, run.model(x_2, sigma_next), sigma_next)
        if run.sigmas[i + 2] == end:
            w_2 = sigma_next / (2 * first)
            x = x + (d * (1 - w_2) + d_2 * w_2) * dt
        else:
            sigma_after = run.sigmas[i + 2]
            x_3 = x_2 + d_2 * (sigma_after - sigma_next)
            d_3 = _derivative(x_3, run.model(x_3, sigma_after), sigma_after)
            w_2, w_3 = sigma_next / (3 * first), sigma_after / (3 * first)
            x = x + ((1 - w_2 - w_3) * d + w_2 * d_2 + w_3 * d_3) * dt
    return x


def _dpm2_step(run: Run, x: torch.Tensor, d: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
    """A DPM-Solver-2 style midpoint step from ``sigma`` to ``sigma_to``, midpoint in log sigma."""
    sigma_mid = math.exp((math.log(sigma) + math.log(sigma_to)) / 2)
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = _derivative(x_2, run.model(x_2, sigma_mid), sigma_mid)
    return x + d_2 * (sigma_to - sigma)


def dpm_2(run: Run, x: torch.Tensor) -> torch.Tensor:
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        d = _derivative(x, run.denoise(x, i), sigma)
        x = x + d * (sigma_next - sigma) if sigma_next == 0 else _dpm2_step(run, x, d, sigma, sigma_next)
    return x


def dpm_2_ancestral(run: Run, x: torch.Tensor) -> torch.Tensor:
    for i in range(run.steps):
        sigma = run.sigmas[i]
        denoised = run.denoise(x, i)
        sigma_down, sigma_up = ancestral_step(sigma, run.sigmas[i + 1])
        d = _derivative(x, denoised, sigma)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigma)
        else:
            x = _dpm2_step(run, x, d, sigma, sigma_down)
            x = x + run.noise(sigma, run.sigmas[i + 1]) * sigma_up
    return x


def _lms_coefficients(sigmas: list[float], i: int, order: int) -> list[float]:
    """Integrals over [sigma_i, sigma_i+1] of the Lagrange basis on the last ``order`` sigmas (newest first)."""
    nodes = [sigmas[i - k] for k in range(order)]
    coefficients = []
    for j in range(order):
        basis = Polynomial([1.0])
        for k in range(order):
            if k != j:
                basis = basis * Polynomial([-nodes[k], 1.0]) / (nodes[j] - nodes[k])
        antiderivative = basis.integ()
        coefficients.append(float(antiderivative(sigmas[i + 1]) - antiderivative(sigmas[i])))
    return coefficients


def lms(run: Run, x: torch.Tensor, order: int = 4) -> torch.Tensor:
    """Linear multistep in sigma (Adams-Bashforth on the ODE derivative), up to 4th order."""
    history: list[torch.Tensor] = []
    for i in range(run.steps):
        sigma = run.sigmas[i]
        denoised = run.denoise(x, i)
        history = [*history[-(order - 1) :], _derivative(x, denoised, sigma)]
        if run.sigmas[i + 1] == 0:
            x = denoised
        else:
            coefficients = _lms_coefficients(run.sigmas, i, min(i + 1, order))
            x = x + sum(c * d for c, d in zip(coefficients, reversed(history), strict=False))
    return x


def dpmpp_2s_ancestral(run: Run, x: torch.Tensor, eta: float = 1.0, s_noise: float = 1.0) -> torch.Tensor:
    """DPM-Solver++(2S) single-step second order, with ancestral noise."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = x + _derivative(x, denoised, sigma) * (sigma_down - sigma)
        else:
            h = math.log(sigma) - math.log(sigma_down)
            sigma_mid = math.exp(-(-math.log(sigma) + h / 2))
            x_2 = (sigma_mid / sigma) * x - math.expm1(-h / 2) * denoised
            denoised_2 = run.model(x_2, sigma_mid)
            x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_2
        if sigma_next > 0:
            x = x + run.noise(sigma, sigma_next) * s_noise * sigma_up
    return x


def ipndm(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Improved PNDM (Zhang & Chen 2022): Adams-Bashforth in sigma on the ODE derivative, with the fixed
    coefficients of orders 1-4 (the order grows with the history), the data prediction into sigma 0."""
    bashforth = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))
    history: list[torch.Tensor] = []  # newest first
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        d = _derivative(x, denoised, sigma)
        history = [d, *history[:3]]
        if sigma_next == 0:
            x = denoised
        else:
            weights = bashforth[len(history) - 1]
            x = x + (sigma_next - sigma) * sum(w * h for w, h in zip(weights, history, strict=True))
    return x


def _ipndm_v_weights(sigmas: list[float], i: int, order: int) -> list[float]:
    """Weights of the newest ``order`` derivatives in iPNDM-v's step from ``sigmas[i]`` (Zhou et al. 2024,
    "Fast ODE-based sampling for diffusion models in around 5 steps"): Adams-Bashforth corrected for uneven
    steps. ``h`` is this step, ``h1``, ``h2``, ``h3`` the earlier ones, all in sigma."""
    h = sigmas[i + 1] - sigmas[i]
    if order == 1:
        return [1.0]
    h1 = sigmas[i] - sigmas[i - 1]
    base = [1 + h / (2 * h1), -h / (2 * h1)]
    if order == 2:
        return base
    h2 = sigmas[i - 1] - sigmas[i - 2]
    third = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [base[0] + third, base[1] - (1 + h1 / h2) * third, third * h1 / h2]
    h3 = sigmas[i - 2] - sigmas[i - 3]
    span = h + h1 + h2
    fourth = (1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * span)
    fourth *= (h * (h + h1) * span) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    ratio = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return [
        base[0] + third + fourth,
        base[1] - (1 + h1 / h2) * third - (1 + h1 / h2 + ratio) * fourth,
        third * h1 / h2 + (h1 / h2 + ratio * (1 + h2 / h3)) * fourth,
        -fourth * ratio * h1 / h2,
    ]


def ipndm_v(run: Run, x: torch.Tensor) -> torch.Tensor:
    """iPNDM with variable steps: Adams-Bashforth of orders 1-4 in sigma with weights for uneven steps."""
    history: list[torch.Tensor] = []  # newest first
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        history = [_derivative(x, denoised, sigma), *history[:3]]
        if sigma_next == 0:
            x = denoised
        else:
            weights = _ipndm_v_weights(run.sigmas, i, len(history))
            x = x + (sigma_next - sigma) * sum(w * d for w, d in zip(weights, history, strict=True))
    return x


def _deis_coefficients(sigmas: list[float], max_order: int, points: int = 10_000) -> list[list[float]]:
    """DEIS "tab" coefficients (Zhang & Chen 2022): the step's integral of d sigma / d t times each Lagrange basis
    polynomial over the last ``order`` times, in the time ``t`` of the VP schedule matching EDM's sigma range
    (0.002..80, epsilon 1e-3), by a ``points``-term float32 Riemann sum as ComfyUI computes it."""
    log_min = torch.log(torch.tensor(0.002) ** 2 + 1)
    log_max = torch.log(torch.tensor(80.0) ** 2 + 1)
    beta_d = 2 * (log_min / 1e-3 - log_max) / (1e-3 - 1)
    beta_0 = log_max - 0.5 * beta_d
    beta_1 = beta_d + beta_0
    sigma = torch.tensor(sigmas, dtype=torch.float32)
    times = ((beta_0**2 + 2 * beta_d * (sigma**2 + 1).log()).sqrt() - beta_0) / beta_d
    table: list[list[float]] = []
    for i in range(len(sigmas) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            table.append([])
            continue
        taus = torch.linspace(float(times[i]), float(times[i + 1]), points)
        dtau = (times[i + 1] - times[i]) / points
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        integrand = 0.5 * (taus * (beta_1 - beta_0) + beta_0) / torch.sqrt(alpha * (1 - alpha))
        nodes = [times[i - k] for k in range(order)]
        row = []
        for j in range(order):
            basis = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(float(torch.sum(integrand * basis) * dtau))
        table.append(row)
    return table


def deis(run: Run, x: torch.Tensor, max_order: int = 3) -> torch.Tensor:
    """DEIS (Zhang & Chen 2022) multistep on the ODE derivative with coefficients from
    :func:`_deis_coefficients`; Euler on the first step and into sigma 0."""
    table = _deis_coefficients(run.sigmas, max_order)
    history: list[torch.Tensor] = []  # newest first
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        d = _derivative(x, run.denoise(x, i), sigma)
        history = [d, *history[: max_order - 1]]
        if sigma_next <= 0 or not table[i]:
            x = x + (sigma_next - sigma) * d
        else:
            x = x + sum(c * h for c, h in zip(table[i], history, strict=True))
    return x


def _res_multistep(run: Run, x: torch.Tensor, eta: float, cfg_pp: bool = False) -> torch.Tensor:
    """RES second-order multistep (Zhang et al. 2023, arXiv 2308.02157) in t = -log sigma: the step is
    ``e^-h x + h (b1 D_i + b2 D_i-1)`` with ``b2 = phi2(-h) / c2``, ``b1 = phi1(-h) - b2``; Euler on the first
    step and into sigma 0. With ``eta`` the step goes to ``sigma_down`` and fresh noise of ``sigma_up`` follows.
    With ``cfg_pp`` the steps run on the unguided prediction from ``x + D - D_uncond`` (CFG++)."""
    previous: tuple[torch.Tensor, float] | None = None  # (prediction, sigma_down) of the last step
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        guided = run.denoise(x, i)
        denoised = run.uncond() if cfg_pp else guided
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if sigma_down == 0 or previous is None:
            d = _derivative(x, denoised, sigma)
            x = guided + d * sigma_down if cfg_pp else x + d * (sigma_down - sigma)
        else:
            if cfg_pp:
                x = x + (guided - denoised)
            old_denoised, old_sigma_down = previous
            h = math.log(sigma) - math.log(sigma_down)
            c2 = (math.log(old_sigma_down) - math.log(run.sigmas[i - 1])) / h
            phi1 = math.expm1(-h) / -h
            phi2 = (phi1 - 1.0) / -h
            b2 = phi2 / c2 if c2 else 0.0
            b1 = phi1 - b2
            x = math.exp(-h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigma_next > 0 and eta:
            x = x + run.noise(sigma, sigma_next) * sigma_up
        previous = (denoised, sigma_down)
    return x


def res_multistep(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _res_multistep(run, x, eta=0.0)


def res_multistep_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _res_multistep(run, x, eta=0.0, cfg_pp=True)


def res_multistep_ancestral(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _res_multistep(run, x, eta=1.0)


def res_multistep_ancestral_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _res_multistep(run, x, eta=1.0, cfg_pp=True)


def gradient_estimation(run: Run, x: torch.Tensor, gamma: float = 2.0, cfg_pp: bool = False) -> torch.Tensor:
    """Euler with gradient estimation (Permenter & Yuan 2024): from the second step the derivative is
    extrapolated as ``d + (gamma - 1) (d - d_previous)``. With ``cfg_pp`` the derivative is the unguided
    prediction's and the Euler step renoises the guided one (CFG++)."""
    previous: torch.Tensor | None = None
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        d = _derivative(x, run.uncond() if cfg_pp else denoised, sigma)
        if sigma_next == 0:
            x = denoised
        else:
            dt = sigma_next - sigma
            x = denoised + d * sigma_next if cfg_pp else x + d * dt
            if previous is not None:
                x = x + (gamma - 1) * (d - previous) * dt
        previous = d
    return x


def gradient_estimation_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    return gradient_estimation(run, x, cfg_pp=True)


def dpmpp_2s_ancestral_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral with CFG++: each exponential step starts from ``x + D - D_uncond`` (the
    unguided prediction of the model call just made)."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next)
        if sigma_down == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_down)
            sigma_mid = math.exp(-(-math.log(sigma) + h / 2))
            x_2 = (sigma_mid / sigma) * (x + (denoised - run.uncond())) - math.expm1(-h / 2) * denoised
            denoised_2 = run.model(x_2, sigma_mid)
            x = (sigma_down / sigma) * (x + (denoised - run.uncond())) - math.expm1(-h) * denoised_2
        if sigma_next > 0:
            x = x + run.noise(sigma, sigma_next) * sigma_up
    return x


def dpmpp_sde(run: Run, x: torch.Tensor, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ stochastic, two stages per step (the midpoint at fraction ``r`` in log sigma)."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma) - math.log(sigma_next)
        sigma_mid = math.exp(math.log(sigma) - r * h)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_mid, eta)
        x_2 = (sigma_down / sigma) * x - math.expm1(math.log(sigma_down) - math.log(sigma)) * denoised
        if eta > 0 and s_noise > 0:
            x_2 = x_2 + run.noise(sigma, sigma_mid) * s_noise * sigma_up
        denoised_2 = run.model(x_2, sigma_mid)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        fac = 1 / (2 * r)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (sigma_down / sigma) * x - math.expm1(math.log(sigma_down) - math.log(sigma)) * denoised_d
        if eta > 0 and s_noise > 0:
            x = x + run.noise(sigma, sigma_next) * s_noise * sigma_up
    return x


def dpmpp_2m(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in the data prediction, log-sigma time."""
    previous: torch.Tensor | None = None
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            target = denoised
            if previous is not None:
                r = (math.log(run.sigmas[i - 1]) - math.log(sigma)) / h
                target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = (sigma_next / sigma) * x - math.expm1(-h) * target
        previous = denoised
    return x


def dpmpp_2m_cfg_pp(run: Run, x: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) with CFG++: the exponential step keeps the guided prediction and decays the unguided
    one (its multistep correction uses the previous unguided prediction)."""
    previous: torch.Tensor | None = None
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        uncond = run.uncond()
        decay = sigma_next / sigma  # e^-h, with e^-h = 0 into sigma 0
        h = math.log(sigma) - math.log(sigma_next) if sigma_next > 0 else math.inf
        mix = -decay * uncond
        if previous is not None and sigma_next > 0:
            r = (math.log(run.sigmas[i - 1]) - math.log(sigma)) / h
            mix = mix - math.expm1(-h) * (1 / (2 * r)) * (denoised - previous)
        x = denoised + mix + decay * x
        previous = uncond
    return x


def dpmpp_multistep_sde(
    run: Run, x: torch.Tensor, order: int, solver: str = "midpoint", eta: float = 1.0, s_noise: float = 1.0
) -> torch.Tensor:
    """DPM-Solver++(2M/3M) SDE: exponential integrator plus exact-variance fresh noise (``eta`` 0: the ODE)."""
    denoised_1: torch.Tensor | None = None
    denoised_2: torch.Tensor | None = None
    h_1: float | None = None
    h_2: float | None = None
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        h: float | None = h_1
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1)
            phi_1 = -math.expm1(-h_eta)
            x = (sigma_next / sigma) * math.exp(-h * eta) * x + phi_1 * denoised
            phi_2 = phi_1 / -h_eta + 1
            if order == 3 and denoised_2 is not None and h_1 is not None and h_2 is not None:
                assert denoised_1 is not None
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif denoised_1 is not None and h_1 is not None:
                r = h_1 / h
                if order == 2 and solver == "midpoint":
                    x = x + 0.5 * phi_1 * (1 / r) * (denoised - denoised_1)
                else:
                    x = x + phi_2 * (1 / r) * (denoised - denoised_1)
            if eta > 0 and s_noise > 0:
                x = x + run.noise(sigma, sigma_next) * sigma_next * math.sqrt(-math.expm1(-2 * h * eta)) * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def dpmpp_2m_sde(run: Run, x: torch.Tensor) -> torch.Tensor:
    return dpmpp_multistep_sde(run, x, order=2, solver="midpoint")


def dpmpp_2m_sde_heun(run: Run, x: torch.Tensor) -> torch.Tensor:
    return dpmpp_multistep_sde(run, x, order=2, solver="heun")


def dpmpp_3m_sde(run: Run, x: torch.Tensor) -> torch.Tensor:
    return dpmpp_multistep_sde(run, x, order=3)


def ddpm(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Ancestral DDPM steps (Ho et al. 2020), taken in the variance-preserving scaling and scaled back."""
    for i in range(run.steps):
        sigma, sigma_next = run.sigmas[i], run.sigmas[i + 1]
        denoised = run.denoise(x, i)
        eps = (x - denoised) / sigma
        alpha_bar, alpha_bar_next = 1 / (sigma * sigma + 1), 1 / (sigma_next * sigma_next + 1)
        alpha = alpha_bar / alpha_bar_next
        x_vp = x / math.sqrt(1.0 + sigma * sigma)
        mean = math.sqrt(1 / alpha) * (x_vp - (1 - alpha) * eps / math.sqrt(1 - alpha_bar))
        if sigma_next > 0:
            spread = math.sqrt((1 - alpha) * (1.0 - alpha_bar_next) / (1.0 - alpha_bar))
            mean = (mean + spread * run.noise(sigma, sigma_next)) * math.sqrt(1.0 + sigma_next * sigma_next)
        x = mean
    return x


def lcm(run: Run, x: torch.Tensor) -> torch.Tensor:
    """Latent Consistency Model sampling: jump to the prediction, re-noise to the next sigma."""
    for i in range(run.steps):
        x = run.denoise(x, i)
        sigma_next = run.sigmas[i + 1]
        if sigma_next > 0:
            x = x + run.noise(run.sigmas[i], sigma_next) * sigma_next
    return x


def uni_pc(run: Run, x: torch.Tensor) -> torch.Tensor:
    return unipc(run, x, variant="bh1")


def uni_pc_bh2(run: Run, x: torch.Tensor) -> torch.Tensor:
    return unipc(run, x, variant="bh2")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler and what the driver must give it.

    ``noise``: the noise source it draws from. ``random_inpaint``: the noise used to re-noise a masked
    latent's kept region is a separate draw (ComfyUI's ``ddim``). ``discard_penultimate``: the schedule is
    computed for one step more and its second-to-last sigma dropped. ``needs_uncond``: it steps on the unguided
    prediction too (CFG++), so the guider keeps it (and evaluates it even at cfg 1).
    """

    fn: Callable[[Run, torch.Tensor], torch.Tensor]
    noise: NoiseKind = "none"
    random_inpaint: bool = False
    discard_penultimate: bool = False
    needs_uncond: bool = False


# ComfyUI's order (KSAMPLER_NAMES, then ddim, uni_pc, uni_pc_bh2), keeping the samplers implemented here.
# The *_gpu variants differ in ComfyUI only by drawing their Brownian noise on the GPU; here all noise is
# drawn on the CPU, so they are the same sampler under another name.
SAMPLERS: dict[str, SamplerSpec] = {
    "euler": SamplerSpec(euler),
    "euler_cfg_pp": SamplerSpec(euler_cfg_pp, needs_uncond=True),
    "euler_ancestral": SamplerSpec(euler_ancestral, noise="gaussian"),
    "euler_ancestral_cfg_pp": SamplerSpec(euler_ancestral_cfg_pp, noise="gaussian", needs_uncond=True),
    "heun": SamplerSpec(heun),
    "heunpp2": SamplerSpec(heunpp2),
    "dpm_2": SamplerSpec(dpm_2, discard_penultimate=True),
    "dpm_2_ancestral": SamplerSpec(dpm_2_ancestral, noise="gaussian", discard_penultimate=True),
    "lms": SamplerSpec(lms),
    "dpm_fast": SamplerSpec(dpm_fast),
    "dpm_adaptive": SamplerSpec(dpm_adaptive),
    "dpmpp_2s_ancestral": SamplerSpec(dpmpp_2s_ancestral, noise="gaussian"),
    "dpmpp_2s_ancestral_cfg_pp": SamplerSpec(dpmpp_2s_ancestral_cfg_pp, noise="gaussian", needs_uncond=True),
    "dpmpp_sde": SamplerSpec(dpmpp_sde, noise="brownian"),
    "dpmpp_sde_gpu": SamplerSpec(dpmpp_sde, noise="brownian"),
    "dpmpp_2m": SamplerSpec(dpmpp_2m),
    "dpmpp_2m_cfg_pp": SamplerSpec(dpmpp_2m_cfg_pp, needs_uncond=True),
    "dpmpp_2m_sde": SamplerSpec(dpmpp_2m_sde, noise="brownian"),
    "dpmpp_2m_sde_gpu": SamplerSpec(dpmpp_2m_sde, noise="brownian"),
    "dpmpp_2m_sde_heun": SamplerSpec(dpmpp_2m_sde_heun, noise="brownian"),
    "dpmpp_2m_sde_heun_gpu": SamplerSpec(dpmpp_2m_sde_heun, noise="brownian"),
    "dpmpp_3m_sde": SamplerSpec(dpmpp_3m_sde, noise="brownian"),
    "dpmpp_3m_sde_gpu": SamplerSpec(dpmpp_3m_sde, noise="brownian"),
    "ddpm": SamplerSpec(ddpm, noise="gaussian"),
    "lcm": SamplerSpec(lcm, noise="gaussian"),
    "ipndm": SamplerSpec(ipndm),
    "ipndm_v": SamplerSpec(ipndm_v),
    "deis": SamplerSpec(deis),
    "res_multistep": SamplerSpec(res_multistep),
    "res_multistep_cfg_pp": SamplerSpec(res_multistep_cfg_pp, needs_uncond=True),
    "res_multistep_ancestral": SamplerSpec(res_multistep_ancestral, noise="gaussian"),
    "res_multistep_ancestral_cfg_pp": SamplerSpec(res_multistep_ancestral_cfg_pp, noise="gaussian", needs_uncond=True),
    "gradient_estimation": SamplerSpec(gradient_estimation),
    "gradient_estimation_cfg_pp": SamplerSpec(gradient_estimation_cfg_pp, needs_uncond=True),
    "er_sde": SamplerSpec(er_sde, noise="gaussian"),
    "seeds_2": SamplerSpec(seeds_2, noise="gaussian"),
    "seeds_3": SamplerSpec(seeds_3, noise="gaussian"),
    "sa_solver": SamplerSpec(sa_solver, noise="gaussian"),
    "sa_solver_pece": SamplerSpec(sa_solver_pece, noise="gaussian"),
    "ddim": SamplerSpec(euler, random_inpaint=True),
    "uni_pc": SamplerSpec(uni_pc, discard_penultimate=True),
    "uni_pc_bh2": SamplerSpec(uni_pc_bh2, discard_penultimate=True),
}
SAMPLER_NAMES: tuple[str, ...] = tuple(SAMPLERS)
