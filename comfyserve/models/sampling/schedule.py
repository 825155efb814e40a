"""SD's discrete noise schedule in sigma form: ComfyUI's ``ModelSamplingDiscrete`` (and ``...Distilled`` for LCM).

Sigmas are the k-diffusion noise levels ``sqrt((1 - alpha_bar) / alpha_bar)`` of the model's training
timesteps, ascending (index 0 is the least noisy). A sigma maps to the nearest timestep in log-sigma; a
fractional timestep maps back by interpolating log-sigma between its neighbours.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from comfyserve.models.handles import SamplingSettings

LCM_ORIGINAL_STEPS = 50
ZSNR_TERMINAL_ALPHA_BAR = 4.8973451890853435e-08


def alphas_cumprod(settings: SamplingSettings) -> torch.Tensor:
    """SD's scaled-linear betas (linear in sqrt(beta)) accumulated into alpha_bar, float64."""
    betas = (
        torch.linspace(settings.linear_start**0.5, settings.linear_end**0.5, settings.timesteps, dtype=torch.float64)
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_terminal_snr(sigmas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023 (Algorithm 1) on sigmas: shift and scale sqrt(alpha_bar) so the last one is zero.

    The terminal alpha_bar is then pinned to ComfyUI's tiny positive value so that sigma_max stays finite.
    """
    root = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root * root
    alpha_bar[-1] = ZSNR_TERMINAL_ALPHA_BAR
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """The model's sigmas (ascending, float32), their logs, and how they map to the UNet's timestep values.

    ``log_sigmas`` are taken where ComfyUI takes them: from the float64 sigmas, except LCM's distilled grid
    (from the float32 ones).

    ``skip`` is the number of training timesteps between two entries: 1 normally, 20 for LCM, whose
    distilled grid keeps 50 of the 1000 timesteps (entry ``k`` is timestep ``k * 20 + 19``).
    """

    sigmas: torch.Tensor
    log_sigmas: torch.Tensor
    skip: int = 1

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: float) -> float:
        """The training timestep whose sigma is nearest in log space (what the UNet is called with); float32
        arithmetic as ComfyUI's, so a sigma halfway between two entries resolves to the same one."""
        log_sigma = torch.tensor(sigma, dtype=torch.float32).log()
        index = int((log_sigma - self.log_sigmas).abs().argmin())
        return float(index * self.skip + self.skip - 1)

    def sigma(self, timestep: float) -> float:
        """The sigma at a (possibly fractional) timestep, interpolating log-sigma linearly (in float32, as
        ComfyUI does)."""
        position = (torch.tensor(timestep, dtype=torch.float32) - (self.skip - 1)) / self.skip
        position = position.clamp(0.0, len(self.sigmas) - 1.0)
        low, high = int(position.floor()), int(position.ceil())
        weight = position.frac()
        log_sigma = (1 - weight) * self.log_sigmas[low] + weight * self.log_sigmas[high]
        return float(log_sigma.exp())

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's mapping of a sampling percentage (0 = start) to a sigma, for timestep ranges."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma((1.0 - percent) * 999.0)


@functools.lru_cache(maxsize=16)
def schedule_for(settings: SamplingSettings) -> DiscreteSchedule:
    """The schedule a model with these settings samples on (cached: settings are immutable)."""
    alpha_bar = alphas_cumprod(settings)
    sigmas = ((1.0 - alpha_bar) / alpha_bar).sqrt()
    if settings.zsnr:
        sigmas = rescale_zero_terminal_snr(sigmas)
    if settings.prediction != "lcm":
        return DiscreteSchedule(sigmas.float(), sigmas.log().float())
    sigmas = sigmas.float()
    skip = settings.timesteps // LCM_ORIGINAL_STEPS
    kept = torch.arange(settings.timesteps - 1, -1, -skip)[:LCM_ORIGINAL_STEPS].flip(0)
    grid = sigmas[kept].contiguous()
    return DiscreteSchedule(grid, grid.log(), skip=skip)
