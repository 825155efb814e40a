"""ComfyUI's schedulers: each turns a step count into a descending sigma list that ends in 0.

All of them return ``steps + 1`` float32 sigmas, except where ComfyUI's own definition gives another length
(``ddim_uniform`` rounds the stride, ``beta`` drops repeated timesteps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from comfyserve.models.sampling.schedule import DiscreteSchedule


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022, eq. 5: uniform steps in sigma^(1/rho) from sigma_max down to sigma_min."""
    ramp = torch.linspace(0, 1, steps)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform steps in log sigma."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def polyexponential(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """A polynomial in log sigma: ``rho`` 1 is the exponential schedule, larger ``rho`` lingers at high noise."""
    ramp = torch.linspace(1, 0, steps) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def laplace(steps: int, sigma_min: float, sigma_max: float, mu: float = 0.0, beta: float = 0.5) -> torch.Tensor:
    """Tiankai et al. 2024: log sigma at the Laplace(mu, beta) quantiles, clamped to the range; no final zero."""
    x = torch.linspace(0, 1, steps)
    log_sigma = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + 1e-5)
    return torch.clamp(torch.exp(log_sigma), min=sigma_min, max=sigma_max)


def vp(steps: int, beta_d: float = 19.9, beta_min: float = 0.1, eps_s: float = 1e-3) -> torch.Tensor:
    """The continuous variance-preserving schedule (Song et al. 2021) at ``steps`` times from 1 down to ``eps_s``."""
    t = torch.linspace(1, eps_s, steps)
    return _append_zero(torch.sqrt(torch.special.expm1(beta_d * t**2 / 2 + beta_min * t)))


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Uniform steps in arctan(sigma) (the KL-optimal schedule of Zhang et al., via AUTOMATIC1111 #15608)."""
    fraction = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)
    angles = fraction * math.atan(sigma_min) + (1 - fraction) * math.atan(sigma_max)
    return _append_zero(angles.tan())


def simple(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Every ``len(sigmas)/steps``-th model sigma, from the top."""
    stride = len(schedule.sigmas) / steps
    picked = [float(schedule.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.tensor([*picked, 0.0], dtype=torch.float32)


def ddim_uniform(schedule: DiscreteSchedule, steps: int) -> torch.Tensor:
    """Model sigmas at timesteps 1, 1 + k, 1 + 2k, ... with k = 1000 // steps, reversed, then 0."""
    sigmas = schedule.sigmas
    start = 1
    picked: list[float] = []
    if math.isclose(float(sigmas[start]), 0.0, abs_tol=1e-5):
        steps += 1
    else:
        picked = [0.0]
    stride = max(len(sigmas) // steps, 1)
    picked += [float(sigmas[i]) for i in range(start, len(sigmas), stride)]
    return torch.tensor(picked[::-1], dtype=torch.float32)


def normal(schedule: DiscreteSchedule, steps: int, sgm: bool = False) -> torch.Tensor:
    """Uniform steps in timestep between the timesteps of sigma_max and sigma_min.

    ``sgm`` (sgm_uniform) spaces ``steps + 1`` points and drops the last, as Stability's sgm code does.
    """
    start = schedule.timestep(schedule.sigma_max)
    end = schedule.timestep(schedule.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(schedule.sigma(end), 0.0, abs_tol=1e-5):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigmas = [schedule.sigma(float(t)) for t in timesteps]
    if append_zero:
        sigmas.append(0.0)
    return torch.tensor(sigmas, dtype=torch.float32)


def beta(schedule: DiscreteSchedule, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024), repeats dropped."""
    import numpy
    import scipy.stats

    last_index = len(schedule.sigmas) - 1
    quantiles = 1 - numpy.linspace(0, 1, steps, endpoint=False)
    timesteps = numpy.rint(scipy.stats.beta.ppf(quantiles, alpha, beta_) * last_index)
    sigmas: list[float] = []
    previous = -1.0
    for t in timesteps:
        if t != previous:
            sigmas.append(float(schedule.sigmas[int(t)]))
        previous = t
    return torch.tensor([*sigmas, 0.0], dtype=torch.float32)


def linear_quadratic(
    schedule: DiscreteSchedule, steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None
) -> torch.Tensor:
    """Mochi's schedule: linear to ``threshold_noise`` over the first half, then quadratic, times sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2 if linear_steps is None else linear_steps
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * step_diff / (quadratic_steps**2)
        const = quadratic_coef * linear_steps**2
        quadratic = [quadratic_coef * i**2 + linear_coef * i + const for i in range(linear_steps, steps)]
        fractions = [1.0 - f for f in [*linear, *quadratic, 1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * schedule.sigma_max


SchedulerFn = Callable[[DiscreteSchedule, int], torch.Tensor]


def _from_range(fn: Callable[[int, float, float], torch.Tensor]) -> SchedulerFn:
    return lambda schedule, steps: fn(steps, schedule.sigma_min, schedule.sigma_max)


SCHEDULERS: dict[str, SchedulerFn] = {
    "simple": simple,
    "sgm_uniform": lambda schedule, steps: normal(schedule, steps, sgm=True),
    "karras": _from_range(karras),
    "exponential": _from_range(exponential),
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": _from_range(kl_optimal),
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULERS)


def calculate_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int) -> torch.Tensor:
    """The sigmas of ``scheduler`` for ``steps`` steps on ``schedule`` (float32, CPU)."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULER_NAMES)}")
    return SCHEDULERS[scheduler](schedule, steps)
