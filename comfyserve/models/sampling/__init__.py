"""Sampling in the k-diffusion formulation ComfyUI uses: schedules, schedulers, samplers, guidance, KSampler."""

from comfyserve.models.sampling.ksampler import KSamplerJob, run_ksampler
from comfyserve.models.sampling.samplers import SAMPLER_NAMES
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES

__all__ = ["SAMPLER_NAMES", "SCHEDULER_NAMES", "KSamplerJob", "run_ksampler"]
