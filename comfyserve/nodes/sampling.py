"""ComfyUI's sampling nodes: KSampler, KSamplerAdvanced and ModelSamplingDiscrete."""

from __future__ import annotations

import dataclasses
from typing import Any

from comfyserve.engine.context import ProgressBar
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.ksampler import KSamplerJob, run_ksampler
from comfyserve.models.sampling.prediction import PREDICTIONS
from comfyserve.models.sampling.samplers import SAMPLER_NAMES
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def _sampling_inputs(seed_name: str) -> dict[str, Any]:
    return {
        "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
        seed_name: (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": MAX_SEED,
                "control_after_generate": True,
                "tooltip": "The random seed used for creating the noise.",
            },
        ),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "The number of denoising steps."}),
        "cfg": (
            "FLOAT",
            {
                "default": 8.0,
                "min": 0.0,
                "max": 100.0,
                "step": 0.1,
                "round": 0.01,
                "tooltip": "The Classifier-Free Guidance scale: how closely the result follows the prompt.",
            },
        ),
        "sampler_name": (list(SAMPLER_NAMES), {"tooltip": "The algorithm used when sampling."}),
        "scheduler": (list(SCHEDULER_NAMES), {"tooltip": "How noise is removed over the steps."}),
        "positive": ("CONDITIONING", {"tooltip": "What to include in the image."}),
        "negative": ("CONDITIONING", {"tooltip": "What to exclude from the image."}),
        "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
    }


def _run(job: KSamplerJob) -> tuple[dict[str, Any]]:
    bar = ProgressBar(job.steps)
    return (run_ksampler(job, lambda value, total: bar.update_absolute(value, total)),)


class KSampler:
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                **_sampling_inputs("seed"),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "The amount of denoising applied; lower values keep the input's structure.",
                    },
                ),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: dict[str, Any],
        denoise: float = 1.0,
    ) -> tuple[dict[str, Any]]:
        return _run(
            KSamplerJob(
                model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=denoise
            )
        )


class KSamplerAdvanced:
    CATEGORY = "sampling"
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        inputs = _sampling_inputs("noise_seed")
        return {
            "required": {
                "model": inputs.pop("model"),
                "add_noise": (["enable", "disable"],),
                **inputs,
                "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
                "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
                "return_with_leftover_noise": (["disable", "enable"],),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: dict[str, Any],
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> tuple[dict[str, Any]]:
        return _run(
            KSamplerJob(
                model,
                noise_seed,
                steps,
                cfg,
                sampler_name,
                scheduler,
                positive,
                negative,
                latent_image,
                add_noise=add_noise != "disable",
                start_step=start_at_step,
                last_step=end_at_step,
                force_full_denoise=return_with_leftover_noise != "enable",
            )
        )


class ModelSamplingDiscrete:
    CATEGORY = "advanced/model"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "sampling": (list(PREDICTIONS),),
                "zsnr": ("BOOLEAN", {"default": False}),
            }
        }

    def patch(self, model: DiffusionModel, sampling: str, zsnr: bool) -> tuple[DiffusionModel]:
        settings = dataclasses.replace(model.sampling, prediction=sampling, zsnr=zsnr)
        return (model.clone(sampling=settings),)


NODE_CLASS_MAPPINGS = {
    "KSampler": KSampler,
    "KSamplerAdvanced": KSamplerAdvanced,
    "ModelSamplingDiscrete": ModelSamplingDiscrete,
}
NODE_DISPLAY_NAME_MAPPINGS = {"KSampler": "KSampler", "KSamplerAdvanced": "KSampler (Advanced)"}
