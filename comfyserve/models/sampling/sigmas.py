"""SIGMAS as the custom sampling nodes make and cut them (ComfyUI's ``nodes_custom_sampler``): 1-D float32 CPU
tensors, descending to 0 for a full denoise."""

from __future__ import annotations

import torch

from comfyserve.models.sampling.schedule import DiscreteSchedule
from comfyserve.models.sampling.schedulers import calculate_sigmas

SD_TURBO_TIMESTEPS = 10  # SD-Turbo's grid: timesteps 999, 899, ..., 99


def basic_sigmas(schedule: DiscreteSchedule, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler: the last ``steps + 1`` sigmas of ``int(steps / denoise)`` steps; empty at denoise 0.
    Unlike KSampler, no sampler drops the penultimate sigma here."""
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.zeros(0)
        total = int(steps / denoise)
    return calculate_sigmas(schedule, scheduler, total)[-(steps + 1) :]


def sd_turbo_sigmas(schedule: DiscreteSchedule, steps: int, denoise: float) -> torch.Tensor:
    """SDTurboScheduler: ``steps`` sigmas of SD-Turbo's 10-timestep grid, starting ``10 - int(10 * denoise)``
    entries in, then 0."""
    start = SD_TURBO_TIMESTEPS - int(SD_TURBO_TIMESTEPS * denoise)
    grid = [100 * n - 1 for n in range(SD_TURBO_TIMESTEPS, 0, -1)]
    return torch.tensor([*(schedule.sigma(float(t)) for t in grid[start : start + steps]), 0.0], dtype=torch.float32)


def split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SplitSigmasDenoise: the low part keeps the last ``round(steps * denoise)`` steps, the high part the rest
    (with ComfyUI's slicing, so a split of 0 steps leaves the high part empty)."""
    steps = max(sigmas.shape[-1] - 1, 0)
    low_steps = round(steps * denoise)
    return sigmas[:-low_steps], sigmas[-(low_steps + 1) :]


def flip_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """FlipSigmas: the sigmas reversed (ascending), a leading 0 raised to 0.0001."""
    if len(sigmas) == 0:
        return sigmas
    flipped = sigmas.flip(0)
    if flipped[0] == 0:
        flipped[0] = 0.0001
    return flipped
