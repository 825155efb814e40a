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


def dpm_adaptive(
    run: Run,
    x: torch.Tensor,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    accept_safety: float = 0.81,
) -> torch.Tensor:
    """DPM-Solver-23: a 3rd-order step and its embedded 2nd-order one give the error estimate (relative to
    ``rtol``/``atol``); an integral step-size controller (limited by ``1 + atan(f - 1)``) accepts or shrinks."""
    if run.steps < 1:
        return x
    solver, (s, t_end) = _Solver(run), _ends(run)
    h = h_init
    tolerance_abs, tolerance_rel = torch.tensor(atol), torch.tensor(rtol)
    x_previous = x
    calls = 0
    while s < t_end - 1e-5:
        cache: dict[str, torch.Tensor] = {}
        t = torch.minimum(t_end, s + h)
        solver.eps(cache, "eps", x, s)
        x_low = solver.step_2(x, s, t, cache, r1=1 / 3)
        x_high = solver.step_3(x, s, t, cache)
        scale = torch.maximum(tolerance_abs, tolerance_rel * torch.maximum(x_low.abs(), x_previous.abs()))
        error = torch.linalg.norm((x_low - x_high) / scale) / x.numel() ** 0.5
        factor = 1 + math.atan((1 / (float(error) + 1e-8)) ** (1 / 3) - 1)  # integral control for order 3
        if factor >= accept_safety:
            x_previous, x, s = x_low, x_high, t
        h *= factor
        run.callback(min(calls, run.steps - 1))
        calls += 1
    return x
