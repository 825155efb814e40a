"""ComfyUI's custom sampling nodes (``comfy_extras/nodes_custom_sampler``) for SD1.x/SD2.x/SDXL.

The types they pass: SIGMAS (a 1-D float32 CPU tensor), SAMPLER (a :class:`SamplerSpec`, parameters bound),
NOISE (:class:`Noise`) and GUIDER (:class:`Guidance`). The sampling nodes run :func:`run_sampling`, the run
KSampler ends in, on the sigmas as given.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from comfyserve.engine.context import ProgressBar
from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling import samplers as k
from comfyserve.models.sampling.driver import DualGuidance, Guidance, Noise, Sampling, run_sampling
from comfyserve.models.sampling.sa_solver import tau_interval
from comfyserve.models.sampling.samplers import SAMPLER_NAMES, SAMPLERS, SamplerSpec
from comfyserve.models.sampling.schedule import schedule_for
from comfyserve.models.sampling.schedulers import (
    SCHEDULER_NAMES,
    exponential,
    karras,
    laplace,
    polyexponential,
    vp,
)
from comfyserve.models.sampling.schedulers import beta as beta_sigmas
from comfyserve.models.sampling.sigmas import basic_sigmas, flip_sigmas, sd_turbo_sigmas, split_sigmas_denoise
from comfyserve.models.sampling.vp_sde import reverse_time_sde_scaler
from comfyserve.nodes.sampling import MAX_SEED

_SCHEDULERS = "sampling/custom_sampling/schedulers"
_SIGMAS = "sampling/custom_sampling/sigmas"
_SAMPLERS = "sampling/custom_sampling/samplers"
_GUIDERS = "sampling/custom_sampling/guiders"
_NOISE = "sampling/custom_sampling/noise"

SeedInput = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True})
CfgInput = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})
StepsInput = ("INT", {"default": 20, "min": 1, "max": 10000})
DenoiseInput = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})


def _float(default: float, low: float = 0.0, high: float = 5000.0, step: float = 0.01) -> tuple[str, dict[str, Any]]:
    """A FLOAT input declared as ComfyUI declares its sampler and scheduler parameters (unrounded)."""
    return ("FLOAT", {"default": default, "min": low, "max": high, "step": step, "round": False})


SigmaMax = _float(14.614642)
SigmaMin = _float(0.0291675)
Eta = _float(1.0, high=100.0)
SNoise = _float(1.0, high=100.0)
NoiseDevice = (["gpu", "cpu"],)


def _range_inputs() -> dict[str, Any]:
    return {"steps": StepsInput, "sigma_max": SigmaMax, "sigma_min": SigmaMin}


class _Schedule:
    RETURN_TYPES = ("SIGMAS",)
    CATEGORY = _SCHEDULERS
    FUNCTION = "get_sigmas"


class BasicScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "scheduler": (list(SCHEDULER_NAMES),),
                "steps": StepsInput,
                "denoise": DenoiseInput,
            }
        }

    def get_sigmas(self, model: DiffusionModel, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (basic_sigmas(schedule_for(model.sampling), scheduler, steps, denoise),)


def _positive_rho(rho: float) -> float:
    if rho <= 0:
        raise NodeInputError(f"rho must be greater than 0, got {rho}")
    return rho


class KarrasScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {**_range_inputs(), "rho": _float(7.0, high=100.0)}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        return (karras(steps, sigma_min, sigma_max, _positive_rho(rho)),)


class ExponentialScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": _range_inputs()}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        if sigma_min <= 0 or sigma_max <= 0:
            raise NodeInputError("ExponentialScheduler needs sigma_max and sigma_min greater than 0")
        return (exponential(steps, sigma_min, sigma_max),)


class PolyexponentialScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {**_range_inputs(), "rho": _float(1.0, high=100.0)}}

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        if sigma_min <= 0 or sigma_max <= 0:
            raise NodeInputError("PolyexponentialScheduler needs sigma_max and sigma_min greater than 0")
        return (polyexponential(steps, sigma_min, sigma_max, rho),)


class LaplaceScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                **_range_inputs(),
                "mu": _float(0.0, low=-10.0, high=10.0, step=0.1),
                "beta": _float(0.5, high=10.0, step=0.1),
            }
        }

    def get_sigmas(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple[torch.Tensor]:
        return (laplace(steps, sigma_min, sigma_max, mu, beta),)


class VPScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "steps": StepsInput,
                "beta_d": _float(19.9),
                "beta_min": _float(0.1),
                "eps_s": _float(0.001, high=1.0, step=0.0001),
            }
        }

    def get_sigmas(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[torch.Tensor]:
        return (vp(steps, beta_d, beta_min, eps_s),)


class BetaSamplingScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "steps": StepsInput,
                "alpha": _float(0.6, high=50.0),
                "beta": _float(0.6, high=50.0),
            }
        }

    def get_sigmas(self, model: DiffusionModel, steps: int, alpha: float, beta: float) -> tuple[torch.Tensor]:
        return (beta_sigmas(schedule_for(model.sampling), steps, alpha, beta),)


class SDTurboScheduler(_Schedule):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "steps": ("INT", {"default": 1, "min": 1, "max": 10}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01}),
            }
        }

    def get_sigmas(self, model: DiffusionModel, steps: int, denoise: float) -> tuple[torch.Tensor]:
        return (sd_turbo_sigmas(schedule_for(model.sampling), steps, denoise),)


class _Sigmas:
    CATEGORY = _SIGMAS
    FUNCTION = "get_sigmas"


class SplitSigmas(_Sigmas):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}}

    def get_sigmas(self, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sigmas[: step + 1], sigmas[step:]


class SplitSigmasDenoise(_Sigmas):
    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",), "denoise": DenoiseInput}}

    def get_sigmas(self, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        return split_sigmas_denoise(sigmas, denoise)


class FlipSigmas(_Sigmas):
    RETURN_TYPES = ("SIGMAS",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",)}}

    def get_sigmas(self, sigmas: torch.Tensor) -> tuple[torch.Tensor]:
        return (flip_sigmas(sigmas),)


class SetFirstSigma(_Sigmas):
    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "set_first_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS",), "sigma": _float(136.0, high=20000.0, step=0.001)}}

    def set_first_sigma(self, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        if len(sigmas) == 0:
            raise NodeInputError("SetFirstSigma needs at least one sigma, got an empty SIGMAS")
        sigmas = sigmas.clone()
        sigmas[0] = sigma
        return (sigmas,)


class SamplingPercentToSigma(_Sigmas):
    RETURN_TYPES = ("FLOAT",)
    RETURN_NAMES = ("sigma_value",)
    FUNCTION = "get_sigma"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {}),
                "sampling_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.0001}),
                "return_actual_sigma": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Return the actual sigma value instead of the value used for interval checks.\n"
                        "This only affects results at 0.0 and 1.0.",
                    },
                ),
            }
        }

    def get_sigma(self, model: DiffusionModel, sampling_percent: float, return_actual_sigma: bool) -> tuple[float]:
        schedule = schedule_for(model.sampling)
        if return_actual_sigma and sampling_percent == 0.0:
            return (schedule.sigma_max,)
        if return_actual_sigma and sampling_percent == 1.0:
            return (schedule.sigma_min,)
        return (schedule.percent_to_sigma(sampling_percent),)


class _Sampler:
    RETURN_TYPES = ("SAMPLER",)
    CATEGORY = _SAMPLERS
    FUNCTION = "get_sampler"


def _bound(name: str, fn: Any, **parameters: Any) -> tuple[SamplerSpec]:
    """The named sampler's spec with ``fn`` (its function, or a sibling) bound to the node's parameters."""
    return (dataclasses.replace(SAMPLERS[name], fn=functools.partial(fn, **parameters)),)


class KSamplerSelect(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sampler_name": (list(SAMPLER_NAMES),)}}

    def get_sampler(self, sampler_name: str) -> tuple[SamplerSpec]:
        if sampler_name not in SAMPLERS:
            raise NodeInputError(f"unknown sampler {sampler_name!r}; available: {', '.join(SAMPLERS)}")
        return (SAMPLERS[sampler_name],)


class SamplerEulerAncestral(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": Eta, "s_noise": SNoise}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerSpec]:
        return _bound("euler_ancestral", k.euler_ancestral, eta=eta, s_noise=s_noise)


class SamplerEulerAncestralCFGPP(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": _float(1.0, high=1.0), "s_noise": _float(1.0, high=10.0)}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerSpec]:
        return _bound("euler_ancestral_cfg_pp", k.euler_ancestral_cfg_pp, eta=eta, s_noise=s_noise)


class SamplerLMS(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"order": ("INT", {"default": 4, "min": 1, "max": 100})}}

    def get_sampler(self, order: int) -> tuple[SamplerSpec]:
        return _bound("lms", k.lms, order=order)


class SamplerDPMPP_3M_SDE(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": Eta, "s_noise": SNoise, "noise_device": NoiseDevice}}

    def get_sampler(self, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerSpec]:
        return _bound("dpmpp_3m_sde", k.dpmpp_multistep_sde, order=3, eta=eta, s_noise=s_noise)


class SamplerDPMPP_2M_SDE(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "solver_type": (["midpoint", "heun"],),
                "eta": Eta,
                "s_noise": SNoise,
                "noise_device": NoiseDevice,
            }
        }

    def get_sampler(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerSpec]:
        return _bound("dpmpp_2m_sde", k.dpmpp_multistep_sde, order=2, solver=solver_type, eta=eta, s_noise=s_noise)


class SamplerDPMPP_SDE(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": Eta, "s_noise": SNoise, "r": _float(0.5, high=100.0), "noise_device": NoiseDevice}}

    def get_sampler(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[SamplerSpec]:
        if r <= 0:
            raise NodeInputError(f"r must be greater than 0, got {r}")
        return _bound("dpmpp_sde", k.dpmpp_sde, eta=eta, s_noise=s_noise, r=r)


class SamplerDPMPP_2S_Ancestral(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"eta": Eta, "s_noise": SNoise}}

    def get_sampler(self, eta: float, s_noise: float) -> tuple[SamplerSpec]:
        return _bound("dpmpp_2s_ancestral", k.dpmpp_2s_ancestral, eta=eta, s_noise=s_noise)


def _unrounded(default: float, high: float = 100.0) -> tuple[str, dict[str, Any]]:
    """An unrounded FLOAT up to 100, as the adaptive, ER-SDE and SA-Solver parameters are declared."""
    return _float(default, high=high)


class SamplerDPMAdaptative(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "order": ("INT", {"default": 3, "min": 2, "max": 3}),
                "rtol": _unrounded(0.05),
                "atol": _unrounded(0.0078),
                "h_init": _unrounded(0.05),
                "pcoeff": _unrounded(0.0),
                "icoeff": _unrounded(1.0),
                "dcoeff": _unrounded(0.0),
                "accept_safety": _unrounded(0.81),
                "eta": _unrounded(0.0),
                "s_noise": _unrounded(1.0),
            }
        }

    def get_sampler(
        self,
        order: int,
        rtol: float,
        atol: float,
        h_init: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        accept_safety: float,
        eta: float,
        s_noise: float,
    ) -> tuple[SamplerSpec]:
        parameters = {"order": order, "rtol": rtol, "atol": atol, "h_init": h_init, "pcoeff": pcoeff}
        parameters |= {"icoeff": icoeff, "dcoeff": dcoeff, "accept_safety": accept_safety, "eta": eta}
        (spec,) = _bound("dpm_adaptive", k.dpm_adaptive, s_noise=s_noise, **parameters)
        return (dataclasses.replace(spec, noise="gaussian"),)  # its ancestral steps (eta > 0) draw noise


ER_SDE_SOLVERS = ("ER-SDE", "Reverse-time SDE", "ODE")


class SamplerER_SDE(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        eta_tooltip = (
            "Stochastic strength of reverse-time SDE.\nWhen eta=0, it reduces to deterministic ODE. "
            "This setting doesn't apply to ER-SDE solver type."
        )
        return {
            "required": {
                "solver_type": ("COMBO", {"options": list(ER_SDE_SOLVERS)}),
                "max_stage": ("INT", {"default": 3, "min": 1, "max": 3}),
                "eta": ("FLOAT", {**_unrounded(1.0)[1], "tooltip": eta_tooltip}),
                "s_noise": _unrounded(1.0),
            }
        }

    def get_sampler(self, solver_type: str, max_stage: int, eta: float, s_noise: float) -> tuple[SamplerSpec]:
        """ER-SDE's own noise scaler, or the reverse-time SDE's ``x^(eta + 1)``; the ODE is that at eta 0,
        without noise."""
        if solver_type not in ER_SDE_SOLVERS:
            raise NodeInputError(f"unknown solver_type {solver_type!r}; available: {', '.join(ER_SDE_SOLVERS)}")
        if solver_type == "ODE" or (solver_type == "Reverse-time SDE" and eta == 0):
            eta, s_noise = 0.0, 0.0
        scaler = {} if solver_type == "ER-SDE" else {"noise_scaler": reverse_time_sde_scaler(eta)}
        return _bound("er_sde", k.er_sde, max_stage=max_stage, s_noise=s_noise, **scaler)


class SamplerSASolver(_Sampler):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {}),
                "eta": _unrounded(1.0, high=10.0),
                "sde_start_percent": ("FLOAT", {"default": 0.2, "min": 0.0, "max": 1.0, "step": 0.001}),
                "sde_end_percent": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.001}),
                "s_noise": _unrounded(1.0),
                "predictor_order": ("INT", {"default": 3, "min": 1, "max": 6}),
                "corrector_order": ("INT", {"default": 4, "min": 0, "max": 6}),
                "use_pece": ("BOOLEAN", {}),
                "simple_order_2": ("BOOLEAN", {}),
            }
        }

    def get_sampler(
        self,
        model: DiffusionModel,
        eta: float,
        sde_start_percent: float,
        sde_end_percent: float,
        s_noise: float,
        predictor_order: int,
        corrector_order: int,
        use_pece: bool,
        simple_order_2: bool,
    ) -> tuple[SamplerSpec]:
        """Noise of strength ``eta`` while sigma is between the model's sigmas at the two percentages."""
        schedule = schedule_for(model.sampling)
        window = tau_interval(
            schedule.percent_to_sigma(sde_start_percent), schedule.percent_to_sigma(sde_end_percent), eta
        )
        return _bound(
            "sa_solver",
            k.sa_solver,
            tau_func=window,
            s_noise=s_noise,
            predictor_order=predictor_order,
            corrector_order=corrector_order,
            use_pece=use_pece,
            simple_order_2=simple_order_2,
        )


class BasicGuider:
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = _GUIDERS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    def get_guider(self, model: DiffusionModel, conditioning: Any) -> tuple[Guidance]:
        return (Guidance(model, conditioning),)


class CFGGuider:
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = _GUIDERS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "cfg": CfgInput,
            }
        }

    def get_guider(self, model: DiffusionModel, positive: Any, negative: Any, cfg: float) -> tuple[Guidance]:
        return (Guidance(model, positive, negative, cfg),)


class DualCFGGuider:
    RETURN_TYPES = ("GUIDER",)
    FUNCTION = "get_guider"
    CATEGORY = _GUIDERS

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "cond1": ("CONDITIONING",),
                "cond2": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "cfg_conds": CfgInput,
                "cfg_cond2_negative": CfgInput,
                "style": (["regular", "nested"],),
            }
        }

    def get_guider(
        self,
        model: DiffusionModel,
        cond1: Any,
        cond2: Any,
        negative: Any,
        cfg_conds: float,
        cfg_cond2_negative: float,
        style: str,
    ) -> tuple[Guidance]:
        if style not in ("regular", "nested"):
            raise NodeInputError(f"style must be 'regular' or 'nested', got {style!r}")
        if not isinstance(cond2, list):
            raise NodeInputError("cond2 must be a CONDITIONING: a list of [tensor, options] pairs")
        # cond2 is guided against like a negative prompt (the refiner's default aesthetic score for one).
        middle = [[entry[0], {**entry[1], "prompt_type": "negative"}] if _is_pair(entry) else entry for entry in cond2]
        guidance = DualGuidance(
            model, cond1, negative, cfg_cond2_negative, middle=middle, cfg_conds=cfg_conds, nested=style == "nested"
        )
        return (guidance,)


def _is_pair(entry: Any) -> bool:
    return isinstance(entry, list | tuple) and len(entry) == 2 and isinstance(entry[1], dict)


class DisableNoise:
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = _NOISE

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def get_noise(self) -> tuple[Noise]:
        return (Noise(0, enabled=False),)


class RandomNoise:
    RETURN_TYPES = ("NOISE",)
    FUNCTION = "get_noise"
    CATEGORY = _NOISE

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"noise_seed": SeedInput}}

    def get_noise(self, noise_seed: int) -> tuple[Noise]:
        return (Noise(noise_seed),)


def _sample(sampling: Sampling) -> tuple[dict[str, Any], dict[str, Any]]:
    sigmas = sampling.sigmas
    bar = ProgressBar(max(len(sigmas) - 1, 0))
    return run_sampling(sampling, lambda value, total: bar.update_absolute(value, total))


def _sigma_list(sigmas: Any) -> list[float]:
    if not isinstance(sigmas, torch.Tensor) or sigmas.ndim != 1:
        raise NodeInputError("sigmas must be a SIGMAS: a 1-D list of noise levels")
    return [float(s) for s in sigmas]


class _Custom:
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")
    FUNCTION = "sample"
    CATEGORY = "sampling/custom_sampling"


class SamplerCustom(_Custom):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "add_noise": ("BOOLEAN", {"default": True}),
                "noise_seed": SeedInput,
                "cfg": CfgInput,
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "sampler": ("SAMPLER",),
                "sigmas": ("SIGMAS",),
                "latent_image": ("LATENT",),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Any,
        negative: Any,
        sampler: SamplerSpec,
        sigmas: torch.Tensor,
        latent_image: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        guidance = Guidance(model, positive, negative, cfg)
        noise = Noise(noise_seed, enabled=add_noise)
        return _sample(Sampling(guidance, sampler, _sigma_list(sigmas), noise, latent_image))


class SamplerCustomAdvanced(_Custom):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "noise": ("NOISE",),
                "guider": ("GUIDER",),
                "sampler": ("SAMPLER",),
                "sigmas": ("SIGMAS",),
                "latent_image": ("LATENT",),
            }
        }

    def sample(
        self, noise: Noise, guider: Guidance, sampler: SamplerSpec, sigmas: torch.Tensor, latent_image: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return _sample(Sampling(guider, sampler, _sigma_list(sigmas), noise, latent_image))


NODE_CLASS_MAPPINGS = {
    "SamplerCustom": SamplerCustom,
    "BasicScheduler": BasicScheduler,
    "KarrasScheduler": KarrasScheduler,
    "ExponentialScheduler": ExponentialScheduler,
    "PolyexponentialScheduler": PolyexponentialScheduler,
    "LaplaceScheduler": LaplaceScheduler,
    "VPScheduler": VPScheduler,
    "BetaSamplingScheduler": BetaSamplingScheduler,
    "SDTurboScheduler": SDTurboScheduler,
    "KSamplerSelect": KSamplerSelect,
    "SamplerEulerAncestral": SamplerEulerAncestral,
    "SamplerEulerAncestralCFGPP": SamplerEulerAncestralCFGPP,
    "SamplerLMS": SamplerLMS,
    "SamplerDPMPP_3M_SDE": SamplerDPMPP_3M_SDE,
    "SamplerDPMPP_2M_SDE": SamplerDPMPP_2M_SDE,
    "SamplerDPMPP_SDE": SamplerDPMPP_SDE,
    "SamplerDPMPP_2S_Ancestral": SamplerDPMPP_2S_Ancestral,
    "SamplerDPMAdaptative": SamplerDPMAdaptative,
    "SamplerER_SDE": SamplerER_SDE,
    "SamplerSASolver": SamplerSASolver,
    "SplitSigmas": SplitSigmas,
    "SplitSigmasDenoise": SplitSigmasDenoise,
    "FlipSigmas": FlipSigmas,
    "SetFirstSigma": SetFirstSigma,
    "SamplingPercentToSigma": SamplingPercentToSigma,
    "CFGGuider": CFGGuider,
    "DualCFGGuider": DualCFGGuider,
    "BasicGuider": BasicGuider,
    "RandomNoise": RandomNoise,
    "DisableNoise": DisableNoise,
    "SamplerCustomAdvanced": SamplerCustomAdvanced,
}
NODE_DISPLAY_NAME_MAPPINGS = {"SamplerEulerAncestralCFGPP": "SamplerEulerAncestralCFG++"}
