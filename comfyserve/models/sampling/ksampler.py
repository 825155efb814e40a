"""KSampler's semantics (ComfyUI's ``common_ksampler``, ``KSampler.set_steps`` / ``sample`` and
``KSAMPLER.sample``): sigmas for steps and denoise and step slicing; the run itself is :mod:`.driver`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.driver import Guidance, Noise, ProgressFn, Sampling, checked_samples, run_sampling
from comfyserve.models.sampling.samplers import SAMPLERS, SamplerSpec
from comfyserve.models.sampling.schedule import DiscreteSchedule, schedule_for
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES, calculate_sigmas


def _spec(sampler_name: str) -> SamplerSpec:
    if sampler_name not in SAMPLERS:
        raise NodeInputError(f"unknown sampler {sampler_name!r}; available: {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler_name]


def full_sigmas(schedule: DiscreteSchedule, sampler_name: str, scheduler: str, steps: int) -> torch.Tensor:
    """The scheduler's sigmas, dropping the second-to-last one for the samplers that ask for it."""
    if scheduler not in SCHEDULER_NAMES:
        raise NodeInputError(f"unknown scheduler {scheduler!r}; available: {', '.join(SCHEDULER_NAMES)}")
    if not _spec(sampler_name).discard_penultimate:
        return calculate_sigmas(schedule, scheduler, steps)
    sigmas = calculate_sigmas(schedule, scheduler, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def step_sigmas(
    schedule: DiscreteSchedule, sampler_name: str, scheduler: str, steps: int, denoise: float = 1.0
) -> torch.Tensor:
    """Sigmas for ``steps`` steps; with ``denoise < 1`` the last ``steps + 1`` of ``int(steps / denoise)``."""
    if denoise > 0.9999:
        return full_sigmas(schedule, sampler_name, scheduler, steps)
    if denoise <= 0.0:
        return torch.zeros(0)
    return full_sigmas(schedule, sampler_name, scheduler, int(steps / denoise))[-(steps + 1) :]


def slice_steps(
    sigmas: torch.Tensor, start_step: int | None, last_step: int | None, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's step window; ``None`` when it starts at or after the last step (nothing to do)."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


@dataclass
class KSamplerJob:
    """One KSampler / KSamplerAdvanced call, inputs as the nodes receive them."""

    model: DiffusionModel
    seed: int
    steps: int
    cfg: float
    sampler_name: str
    scheduler: str
    positive: Any
    negative: Any
    latent: Any
    denoise: float = 1.0
    add_noise: bool = True
    start_step: int | None = None
    last_step: int | None = None
    force_full_denoise: bool = False


def run_ksampler(job: KSamplerJob, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Sample ``job.latent`` and return the output LATENT (samples on the CPU, float32, other keys kept)."""
    checked_samples(job.latent, job.model)
    schedule = schedule_for(job.model.sampling)
    sigmas = step_sigmas(schedule, job.sampler_name, job.scheduler, job.steps, job.denoise)
    window = slice_steps(sigmas, job.start_step, job.last_step, job.force_full_denoise)
    if window is None or len(window) == 0:
        return dict(job.latent)
    sampling = Sampling(
        Guidance(job.model, job.positive, job.negative, job.cfg),
        SAMPLERS[job.sampler_name],
        [float(s) for s in window],
        Noise(job.seed, enabled=job.add_noise),
        job.latent,
    )
    return run_sampling(sampling, progress)[0]
