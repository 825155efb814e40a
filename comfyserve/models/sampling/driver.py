"""One sampling run as ComfyUI's ``CFGGuider.sample`` performs it: a guider (model, conditioning, cfg), a
sampler, explicit sigmas and a noise source on a LATENT. KSampler and the custom sampling nodes both end here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.lora import patched
from comfyserve.models.memory import on_device
from comfyserve.models.sampling.conditioning import PreparedCond, SamplingInputs, prepare_conds
from comfyserve.models.sampling.control import control_modules, fill_uncond_controls
from comfyserve.models.sampling.guidance import DualGuider, Guider
from comfyserve.models.sampling.noise import BrownianNoise, NoiseSampler, gaussian_noise, initial_noise
from comfyserve.models.sampling.resize import repeat_to_batch
from comfyserve.models.sampling.run import Denoiser, Run
from comfyserve.models.sampling.samplers import SamplerSpec
from comfyserve.models.sampling.schedule import DiscreteSchedule, schedule_for
from comfyserve.models.unet_patches import output_block_patches

ProgressFn = Callable[[int, int], None]
Prepare = Callable[[Any, str], list[PreparedCond]]


@dataclass(frozen=True)
class Guidance:
    """ComfyUI's GUIDER: a model and its conditioning; ``negative`` is ``None`` for BasicGuider (positive only)."""

    model: DiffusionModel
    positive: Any
    negative: Any | None = None
    cfg: float = 1.0

    def guider(self, schedule: DiscreteSchedule, prepare: Prepare) -> Guider:
        """The denoiser of a run; ``prepare`` turns a CONDITIONING of a side into the UNet's inputs."""
        positive, negative = prepare(self.positive, "positive"), prepare(self.negative_side(), "negative")
        return Guider(self.model, schedule, positive, negative, self.cfg)

    def negative_side(self) -> list[Any]:
        """The negative conditioning, given the positive side's ControlNets where ComfyUI hands them over."""
        return fill_uncond_controls(self.positive, [] if self.negative is None else self.negative)

    def controls(self) -> list[torch.nn.Module]:
        """The ControlNet models of every side (held on the device for the run)."""
        return control_modules(self.positive, self.negative)


@dataclass(frozen=True)
class DualGuidance(Guidance):
    """DualCFGGuider's GUIDER: ``positive`` (cond1) guided from ``middle`` (cond2) by ``cfg_conds``, ``middle``
    from ``negative`` by ``cfg`` (cfg_cond2_negative); ``nested`` for the nested style."""

    middle: Any = None
    cfg_conds: float = 1.0
    nested: bool = False

    def guider(self, schedule: DiscreteSchedule, prepare: Prepare) -> Guider:
        negative = prepare(self.negative_side(), "negative")
        conds = (prepare(self.positive, "positive"), prepare(self.middle, "middle"), negative)
        return DualGuider(self.model, schedule, conds, self.cfg_conds, self.cfg, self.nested)

    def controls(self) -> list[torch.nn.Module]:
        return control_modules(self.positive, self.middle, self.negative)


@dataclass(frozen=True)
class Noise:
    """ComfyUI's NOISE: the seed's starting noise (``prepare_noise``), or zeros when disabled (seed 0)."""

    seed: int = 0
    enabled: bool = True

    def generate(self, latent: dict[str, Any], samples: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return torch.zeros(samples.shape, dtype=samples.dtype)
        return initial_noise(samples, self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class Sampling:
    """One run: ``sigmas`` as given (descending), the step noise seeded with ``noise.seed``."""

    guidance: Guidance
    sampler: SamplerSpec
    sigmas: list[float]
    noise: Noise
    latent: dict[str, Any]


def checked_samples(latent: Any, model: DiffusionModel) -> torch.Tensor:
    """The LATENT's samples, refused with a clear error unless a 4-D batch with the model's channel count."""
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


class _Recorder:
    """Wraps the outermost denoiser and keeps the prediction each step reported (the ``denoised_output``)."""

    def __init__(self, denoiser: Denoiser, progress: ProgressFn | None, total: int) -> None:
        self.denoiser, self.progress, self.total = denoiser, progress, total
        self.latest: torch.Tensor | None = None
        self.reported: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.latest = self.denoiser(x, sigma)
        return self.latest

    def step(self, step: int) -> None:
        self.reported = self.latest
        if self.progress is not None:
            self.progress(step + 1, self.total)


def run_sampling(job: Sampling, progress: ProgressFn | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample ``job.latent``: the output LATENT and the denoised LATENT of the last reported step (the output
    itself when no step ran), samples on the CPU in float32, other keys kept."""
    samples = checked_samples(job.latent, job.guidance.model)
    out = dict(job.latent)
    if not job.sigmas:
        return out, out
    model = job.guidance.model
    with (
        torch.no_grad(),
        patched(model) as unet,
        output_block_patches(unet, model.output_block_patches),
        on_device(*job.guidance.controls()),
    ):
        x, denoised = _sample(job, samples, next(unet.parameters()), progress)
    out["samples"] = x.float().cpu()
    if denoised is None:
        return out, out
    return out, {**job.latent, "samples": denoised.float().cpu()}


def _sample(
    job: Sampling, samples: torch.Tensor, parameter: torch.Tensor, progress: ProgressFn | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the sampler on the UNet's device and dtype (``parameter`` is one of its weights)."""
    spec, sigmas, model = job.sampler, job.sigmas, job.guidance.model
    schedule = schedule_for(model.sampling)
    device, dtype = parameter.device, parameter.dtype
    noise = job.noise.generate(job.latent, samples)
    latent = samples.to(device, torch.float32)
    noise = noise.to(device, torch.float32)
    mask = job.latent.get("noise_mask")
    denoise_mask = _prepare_mask(mask, latent.shape, device) if mask is not None else None

    inputs = SamplingInputs(latent=latent, denoise_mask=denoise_mask, device=device, dtype=dtype)
    guider = job.guidance.guider(
        schedule, lambda conditioning, side: prepare_conds(model, schedule, conditioning, side, inputs)
    )
    if spec.needs_uncond:
        guider.keep_uncond()
    denoiser: Denoiser = guider
    if denoise_mask is not None:
        seed = job.noise.seed
        inpaint_noise = gaussian_noise(latent, seed + 1)(0.0, 0.0) if spec.random_inpaint else noise
        denoiser = _masked(guider, denoise_mask, latent, inpaint_noise)
    recorder = _Recorder(denoiser, progress, len(sigmas) - 1)

    sigma_0 = sigmas[0]
    max_denoise = math.isclose(schedule.sigma_max, sigma_0, rel_tol=1e-5) or sigma_0 > schedule.sigma_max
    x = noise * (math.sqrt(1.0 + sigma_0**2) if max_denoise else sigma_0) + latent
    if len(sigmas) == 1:  # no step: the noised latent, as ComfyUI's samplers return it
        return x, None
    run = Run(
        recorder,
        sigmas,
        _noise_sampler(spec, x, sigmas, job.noise.seed),
        recorder.step,
        guider.last_uncond if spec.needs_uncond else None,
        schedule.percent_to_sigma,
    )
    return spec.fn(run, x), recorder.reported
