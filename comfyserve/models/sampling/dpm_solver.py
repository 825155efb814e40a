"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) in its noise-prediction form, with the time ``t = -log sigma``:
``dpm_fast`` (fixed steps of orders 3, 2, 1 spread evenly in ``t``) and ``dpm_adaptive`` (embedded 2/3 pairs
with a PID step-size controller). Both ignore the scheduler's spacing: they run from the first sigma down to the
smallest non-zero one, as ComfyUI's do. Times are float32 tensors, as there.
"""

from __future__ import annotations

import math

import torch

from comfyserve.models.sampling.run import Run


class _Solver:
    """One run's model in noise-prediction form, with the single-step DPM-Solvers of orders 1-3."""

    def __init__(self, run: Run) -> None:
        self.run = run

    @staticmethod
    def sigma(t: torch.Tensor) -> float:
        return float(t.neg().exp())

    def eps(self, cache: dict[str, torch.Tensor], key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            sigma = self.sigma(t)
            cache[key] = (x - self.run.model(x, sigma)) / sigma
        return cache[key]

    def step_1(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        h = t_next - t
        return x - self.sigma(t_next) * float(h.expm1()) * self.eps(cache, "eps", x, t)

    def step_2(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict[str, torch.Tensor], r1: float = 0.5
    ) -> torch.Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * float((r1 * h).expm1()) * eps
        eps_1 = self.eps(cache, "eps_r1", u1, s1)
        grow = float(h.expm1())
        return x - self.sigma(t_next) * grow * eps - self.sigma(t_next) / (2 * r1) * grow * (eps_1 - eps)

    def step_3(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        r1, r2 = 1 / 3, 2 / 3
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * float((r1 * h).expm1()) * eps
        eps_1 = self.eps(cache, "eps_r1", u1, s1)
        grow_2 = float((r2 * h).expm1())
        u2 = (
            x
            - self.sigma(s2) * grow_2 * eps
            - self.sigma(s2) * (r2 / r1) * float(grow_2 / (r2 * h) - 1) * (eps_1 - eps)
        )
        eps_2 = self.eps(cache, "eps_r2", u2, s2)
        grow = float(h.expm1())
        return x - self.sigma(t_next) * grow * eps - self.sigma(t_next) / r2 * float(h.expm1() / h - 1) * (eps_2 - eps)


def _ends(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """``t`` of the first sigma and of the smallest non-zero one (the last, or the one before a final 0)."""
    sigma_min = run.sigmas[-1] if run.sigmas[-1] > 0 else run.sigmas[-2]
    return torch.tensor(run.sigmas[0]).log().neg(), torch.tensor(sigma_min).log().neg()


def dpm_fast(run: Run, x: torch.Tensor) -> torch.Tensor:
    """As many model calls as steps, in steps of order 3 and a final 2+1 or 1 or 2."""
    if run.steps < 1:
        return x
    solver, (t_start, t_end) = _Solver(run), _ends(run)
    calls = run.steps
    count = calls // 3 + 1
    times = torch.linspace(float(t_start), float(t_end), count + 1)
    orders = [3] * (count - 2) + [2, 1] if calls % 3 == 0 else [3] * (count - 1) + [calls % 3]
    for i, order in enumerate(orders):
        cache: dict[str, torch.Tensor] = {}
        t, t_next = times[i], times[i + 1]
        solver.eps(cache, "eps", x, t)
        run.callback(min(i, run.steps - 1))
        step = solver.step_1 if order == 1 else solver.step_2 if order == 2 else solver.step_3
        x = step(x, t, t_next, cache)
    return x


class _PIDController:
    """The step size's PID controller: the factor ``e0^b1 e1^b2 e2^b3`` of the last three inverse errors,
    limited by ``1 + atan(f - 1)``; a step is accepted when the factor reaches ``accept_safety``."""

    def __init__(self, h: float, coefficients: tuple[float, float, float], order: float, accept_safety: float) -> None:
        p, i, d = coefficients
        self.h = h
        self.exponents = ((p + i + d) / order, -(p + 2 * d) / order, d / order)
        self.accept_safety = accept_safety
        self.inverse_errors: list[float] = []

    def propose(self, error: float) -> bool:
        inverse = 1 / (error + 1e-8)
        if not self.inverse_errors:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        e0, e1, e2 = self.inverse_errors
        b1, b2, b3 = self.exponents
        factor = 1 + math.atan(e0**b1 * e1**b2 * e2**b3 - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse_errors = [e0, e0, e1]
        self.h *= factor
        return accept


def dpm_adaptive(
    run: Run,
    x: torch.Tensor,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """DPM-Solver-12 or -23 (``order`` 2 or 3): a step of that order and its embedded one of the order below
    give the error estimate (relative to ``rtol``/``atol``) on which :class:`_PIDController` accepts the step
    or shrinks it. With ``eta``, each accepted step goes down to the ancestral sigma and adds fresh noise
    (times ``s_noise``) back up to the step's end."""
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive's order is 2 or 3, not {order}")
    if run.steps < 1:
        return x
    solver, (s, t_end) = _Solver(run), _ends(run)
    pid = _PIDController(abs(h_init), (pcoeff, icoeff, dcoeff), 1.5 if eta else order, accept_safety)
    tolerance_abs, tolerance_rel = torch.tensor(atol), torch.tensor(rtol)
    x_previous = x
    calls = 0
    while s < t_end - 1e-5:
        cache: dict[str, torch.Tensor] = {}
        t = torch.minimum(t_end, s + pid.h)
        t_down, sigma_up = _ancestral(s, t, t_end, eta) if eta else (t, 0.0)
        solver.eps(cache, "eps", x, s)
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t_down, cache), solver.step_2(x, s, t_down, cache)
        else:
            x_low, x_high = solver.step_2(x, s, t_down, cache, r1=1 / 3), solver.step_3(x, s, t_down, cache)
        scale = torch.maximum(tolerance_abs, tolerance_rel * torch.maximum(x_low.abs(), x_previous.abs()))
        error = torch.linalg.norm((x_low - x_high) / scale) / x.numel() ** 0.5
        if pid.propose(float(error)):
            x_previous, x = x_low, x_high
            if sigma_up:
                x = x + sigma_up * s_noise * run.noise(solver.sigma(s), solver.sigma(t))
            s = t
        run.callback(min(calls, run.steps - 1))
        calls += 1
    return x


def _ancestral(s: torch.Tensor, t: torch.Tensor, t_end: torch.Tensor, eta: float) -> tuple[torch.Tensor, float]:
    """The time an ancestral step from ``s`` to ``t`` goes down to (not past ``t_end``) and the noise it adds
    back, in float32 as ComfyUI computes them."""
    sigma_s, sigma_t = s.neg().exp(), t.neg().exp()
    sigma_up = torch.minimum(sigma_t, eta * (sigma_t**2 * (sigma_s**2 - sigma_t**2) / sigma_s**2) ** 0.5)
    sigma_down = (sigma_t**2 - sigma_up**2) ** 0.5
    t_down = torch.minimum(t_end, sigma_down.log().neg())
    return t_down, float((sigma_t**2 - t_down.neg().exp() ** 2) ** 0.5)
