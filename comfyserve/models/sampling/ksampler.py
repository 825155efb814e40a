"""KSampler's semantics (ComfyUI's ``common_ksampler``, ``KSampler.set_steps`` / ``sample`` and
``KSAMPLER.sample``): sigmas for steps and denoise, step slicing, starting noise, noise masks, the run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.lora import patched
from comfyserve.models.sampling.conditioning import SamplingInputs, prepare_conds
from comfyserve.models.sampling.guidance import Guider
from comfyserve.models.sampling.noise import BrownianNoise, NoiseSampler, gaussian_noise, initial_noise
from comfyserve.models.sampling.resize import repeat_to_batch
from comfyserve.models.sampling.run import Denoiser, Run
from comfyserve.models.sampling.samplers import SAMPLERS, SamplerSpec
from comfyserve.models.sampling.schedule import DiscreteSchedule, schedule_for
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES, calculate_sigmas

ProgressFn = Callable[[int, int], None]


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


def _checked_samples(latent: Any, model: DiffusionModel) -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or min(samples.shape) == 0:
        shape = list(samples.shape) if isinstance(samples, torch.Tensor) else None
        raise NodeInputError(
            f"latent_image must be a LATENT holding samples of shape [batch, channels, height, width], got {shape}"
        )
    if samples.shape[1] != model.latent_channels:
        raise NodeInputError(
            f"latent_image has {samples.shape[1]} channels but this model works on "
            f"{model.latent_channels}-channel latents"
        )
    return samples


def _prepare_mask(mask: Any, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """A noise mask resized to the latent (bilinear), repeated over channels and batch."""
    if not isinstance(mask, torch.Tensor) or mask.ndim < 2:
        raise NodeInputError("the latent's noise_mask must be a mask tensor of shape [batch, height, width]")
    mask = mask.to(device, torch.float32).reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    mask = torch.nn.functional.interpolate(mask, size=tuple(shape[2:]), mode="bilinear")
    mask = mask.repeat(1, shape[1], 1, 1)
    return repeat_to_batch(mask, shape[0])


def _masked(denoiser: Denoiser, mask: torch.Tensor, latent: torch.Tensor, noise: torch.Tensor) -> Denoiser:
    """Keep the unmasked region on the original latent's noising path (ComfyUI's ``KSamplerX0Inpaint``)."""
    keep = 1.0 - mask

    def masked(x: torch.Tensor, sigma: float) -> torch.Tensor:
        x = x * mask + (latent + noise * sigma) * keep
        return denoiser(x, sigma) * mask + latent * keep

    return masked


def _noise_sampler(spec: SamplerSpec, like: torch.Tensor, sigmas: list[float], seed: int) -> NoiseSampler:
    positive = [s for s in sigmas if s > 0]
    if spec.noise == "brownian" and positive:
        return BrownianNoise(like, min(positive), max(positive), seed)
    return gaussian_noise(like, seed)


def run_ksampler(job: KSamplerJob, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Sample ``job.latent`` and return the output LATENT (samples on the CPU, float32, other keys kept)."""
    samples = _checked_samples(job.latent, job.model)
    schedule = schedule_for(job.model.sampling)
    sigmas = step_sigmas(schedule, job.sampler_name, job.scheduler, job.steps, job.denoise)
    window = slice_steps(sigmas, job.start_step, job.last_step, job.force_full_denoise)
    if window is None or len(window) == 0:
        return dict(job.latent)
    sigma_list = [float(s) for s in window]

    with torch.no_grad(), patched(job.model) as unet:
        x = _sample(job, samples, sigma_list, next(unet.parameters()), progress)
    out = dict(job.latent)
    out["samples"] = x.float().cpu()
    return out


def _sample(
    job: KSamplerJob,
    samples: torch.Tensor,
    sigmas: list[float],
    parameter: torch.Tensor,
    progress: ProgressFn | None,
) -> torch.Tensor:
    """Run the sampler on the UNet's device and dtype (``parameter`` is one of its weights)."""
    spec, schedule = SAMPLERS[job.sampler_name], schedule_for(job.model.sampling)
    device, dtype = parameter.device, parameter.dtype
    if job.add_noise:
        noise = initial_noise(samples, job.seed, job.latent.get("batch_index"))
    else:
        noise = torch.zeros(samples.shape, dtype=samples.dtype)
    latent = samples.to(device, torch.float32)
    noise = noise.to(device, torch.float32)
    mask = job.latent.get("noise_mask")
    denoise_mask = _prepare_mask(mask, latent.shape, device) if mask is not None else None

    inputs = SamplingInputs(latent=latent, denoise_mask=denoise_mask, device=device, dtype=dtype)
    guider = Guider(
        job.model,
        schedule,
        prepare_conds(job.model, schedule, job.positive, "positive", inputs),
        prepare_conds(job.model, schedule, job.negative, "negative", inputs),
        job.cfg,
    )
    if spec.needs_uncond:
        guider.keep_uncond()
    denoiser: Denoiser = guider
    if denoise_mask is not None:
        inpaint_noise = gaussian_noise(latent, job.seed + 1)(0.0, 0.0) if spec.random_inpaint else noise
        denoiser = _masked(guider, denoise_mask, latent, inpaint_noise)

    total = len(sigmas) - 1

    def callback(step: int) -> None:
        if progress is not None:
            progress(step + 1, total)

    sigma_0 = sigmas[0]
    max_denoise = math.isclose(schedule.sigma_max, sigma_0, rel_tol=1e-5) or sigma_0 > schedule.sigma_max
    x = noise * (math.sqrt(1.0 + sigma_0**2) if max_denoise else sigma_0) + latent
    run = Run(
        denoiser,
        sigmas,
        _noise_sampler(spec, x, sigmas, job.seed),
        callback,
        guider.last_uncond if spec.needs_uncond else None,
        schedule.percent_to_sigma,
    )
    return spec.fn(run, x)
