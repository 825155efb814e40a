"""SA-Solver (Xue et al., NeurIPS 2023, arXiv 2309.05019): stochastic Adams predictor-corrector in data
prediction, in ``lambda = -log sigma``. Noise of strength ``tau = 1`` is injected while sigma is inside the
window of sampling percentages 0.2..0.8 (``tau = 0`` elsewhere: the ODE); the predictor is of order up to 3, the
corrector up to 4, both lowered near the end; ``pece`` evaluates the model again at each corrected state.
"""

from __future__ import annotations

import math

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


def _sa_solver(
    run: Run, x: torch.Tensor, pece: bool, predictor_order: int = 3, corrector_order: int = 4
) -> torch.Tensor:
    if run.steps < 1:
        return x
    sigmas = run.sigmas
    lambdas = torch.tensor(sigmas, dtype=torch.float32).log().neg()
    assert run.percent_to_sigma is not None, "sa_solver needs the model's schedule"
    window_high, window_low = run.percent_to_sigma(0.2), run.percent_to_sigma(0.8)
    to_end = sigmas[-1] == 0
    x_pred = x
    h, tau = 0.0, 0.0
    noise: torch.Tensor | float = 0.0
    preds: list[torch.Tensor] = []
    for i in range(run.steps):
        denoised = run.denoise(x_pred, i)
        preds = [*preds, denoised][-max(predictor_order, corrector_order) :]
        predictor_used = min(predictor_order, len(preds))
        corrector_used = 0 if i == 0 or (sigmas[i + 1] == 0 and not pece) else min(corrector_order, len(preds))
        if to_end:
            predictor_used = min(predictor_used, run.steps - 1 - i)
            corrector_used = min(corrector_used, run.steps - i)
        if corrector_used == 0:
            x = x_pred
        else:
            nodes = lambdas[i - corrector_used + 1 : i + 1]
            weights = _adams_weights(nodes, float(lambdas[i - 1]), float(lambdas[i]), tau)
            x = sigmas[i] / sigmas[i - 1] * math.exp(-(tau**2) * h) * x + sum(
                float(w) * p for w, p in zip(weights, preds[-corrector_used:], strict=True)
            )
            if tau > 0:
                x = x + noise
            if pece:
                denoised = preds[-1] = run.model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        tau = 1.0 if window_high >= sigmas[i + 1] >= window_low else 0.0
        nodes = lambdas[i - predictor_used + 1 : i + 1]
        weights = _adams_weights(nodes, float(lambdas[i]), float(lambdas[i + 1]), tau)
        h = float(lambdas[i + 1] - lambdas[i])
        x_pred = sigmas[i + 1] / sigmas[i] * math.exp(-(tau**2) * h) * x + sum(
            float(w) * p for w, p in zip(weights, preds[-predictor_used:], strict=True)
        )
        if tau > 0:
            noise = run.noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * math.sqrt(-math.expm1(-2 * tau**2 * h))
            x_pred = x_pred + noise
    return x


def sa_solver(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _sa_solver(run, x, pece=False)


def sa_solver_pece(run: Run, x: torch.Tensor) -> torch.Tensor:
    return _sa_solver(run, x, pece=True)
