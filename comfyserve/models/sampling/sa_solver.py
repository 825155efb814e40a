"""SA-Solver (Xue et al., NeurIPS 2023, arXiv 2309.05019): stochastic Adams predictor-corrector in data
prediction, in ``lambda = -log sigma``. Noise of strength ``tau`` (``eta``, 1 by default) is injected while
sigma is inside a window of sampling percentages (0.2..0.8 by default; ``tau = 0`` elsewhere: the ODE); the
predictor is of order up to 3, the corrector up to 4 by default, both lowered near the end; ``use_pece``
evaluates the model again at each corrected state; ``simple_order_2`` takes the paper's simplified order-2
coefficients (Appendix D) whenever two points are used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from comfyserve.models.sampling.run import Run


def _adams_weights(nodes: torch.Tensor, lambda_s: float, lambda_t: float, tau: float) -> torch.Tensor:
    """``(1 + tau^2) * integral over [lambda_s, lambda_t] of e^((1 + tau^2)(l - lambda_t)) L_j(l) dl`` for the
    Lagrange basis ``L_j`` on ``nodes``: the exponentially weighted moments by integration by parts, then
    mapped onto the basis through the transposed Vandermonde system (float32, as ComfyUI computes them)."""
    rate = 1 + tau**2
    s, t = torch.tensor(lambda_s, dtype=torch.float32), torch.tensor(lambda_t, dtype=torch.float32)
    decay = torch.exp(-rate * (t - s))
    moments: list[torch.Tensor] = []
    for p in range(len(nodes)):
        moment = t**p - s**p * decay
        if p:
            moment = moment - (p / rate) * moments[-1]
        moments.append(moment)
    vandermonde_t = torch.vander(nodes, len(nodes), increasing=True).T
    return torch.linalg.solve(vandermonde_t, torch.stack(moments))


TauFn = Callable[[float], float]


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> TauFn:
    """``eta`` while ``start_sigma >= sigma >= end_sigma``, else 0 (always 0 when ``eta <= 0``: the ODE)."""
    return lambda sigma: eta if eta > 0 and start_sigma >= sigma >= end_sigma else 0.0


def _simple_order_2(
    earlier: torch.Tensor, lambda_s: torch.Tensor, lambda_t: torch.Tensor, tau: float, corrector: bool
) -> torch.Tensor:
    """The paper's simplified order-2 weights of the two points (the earlier first), ``alpha_t = 1``: the
    corrector's over ``[lambda_s, lambda_t]`` ending at its latest point, the predictor's extrapolating from
    ``earlier``."""
    rate, h = 1 + tau**2, lambda_t - lambda_s
    whole = (-h * rate).expm1().neg()
    if corrector:
        latest = 0.5 * rate * h
        return torch.stack([whole - latest, latest])
    older = 0.5 * rate * h**2 / (earlier - lambda_s)
    return torch.stack([older, whole - older])


def _weights(
    nodes: torch.Tensor, lambda_s: torch.Tensor, lambda_t: torch.Tensor, tau: float, simple: bool, corrector: bool
) -> torch.Tensor:
    if simple and len(nodes) == 2:
        return _simple_order_2(nodes[0], lambda_s, lambda_t, tau, corrector)
    return _adams_weights(nodes, float(lambda_s), float(lambda_t), tau)


def sa_solver(
    run: Run,
    x: torch.Tensor,
    use_pece: bool = False,
    tau_func: TauFn | None = None,
    s_noise: float = 1.0,
    predictor_order: int = 3,
    corrector_order: int = 4,
    simple_order_2: bool = False,
) -> torch.Tensor:
    if run.steps < 1:
        return x
    sigmas = run.sigmas
    lambdas = torch.tensor(sigmas, dtype=torch.float32).log().neg()
    if tau_func is None:
        assert run.percent_to_sigma is not None, "sa_solver needs the model's schedule"
        tau_func = tau_interval(run.percent_to_sigma(0.2), run.percent_to_sigma(0.8))
    noisy = s_noise > 0
    to_end = sigmas[-1] == 0
    x_pred = x
    h, tau = 0.0, 0.0
    noise: torch.Tensor | float = 0.0
    preds: list[torch.Tensor] = []
    for i in range(run.steps):
        denoised = run.denoise(x_pred, i)
        preds = [*preds, denoised][-max(predictor_order, corrector_order) :]
        predictor_used = min(predictor_order, len(preds))
        corrector_used = 0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(preds))
        if to_end:
            predictor_used = min(predictor_used, run.steps - 1 - i)
            corrector_used = min(corrector_used, run.steps - i)
        if corrector_used == 0:
            x = x_pred
        else:
            nodes = lambdas[i - corrector_used + 1 : i + 1]
            weights = _weights(nodes, lambdas[i - 1], lambdas[i], tau, simple_order_2, corrector=True)
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau**2) * h) * x + sum(
                float(w) * p for w, p in zip(weights, preds[-corrector_used:], strict=True)
            )
            if tau > 0 and noisy:
                x = x + noise
            if use_pece:
                denoised = preds[-1] = run.model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = tau_func(sigmas[i + 1])
        nodes = lambdas[i - predictor_used + 1 : i + 1]
        weights = _weights(nodes, lambdas[i], lambdas[i + 1], tau, simple_order_2, corrector=False)
        h = float(lambdas[i + 1] - lambdas[i])
        x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau**2) * h) * x + sum(
            float(w) * p for w, p in zip(weights, preds[-predictor_used:], strict=True)
        )
        if tau > 0 and noisy:
            spread = math.sqrt(-math.expm1(-2 * tau**2 * h))
            noise = run.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * spread * s_noise
            x_pred = x_pred + noise
    return x


def sa_solver_pece(run: Run, x: torch.Tensor) -> torch.Tensor:
    return sa_solver(run, x, use_pece=True)
