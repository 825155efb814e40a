"""Differential parity of the custom sampling nodes: the same workflow and seed through the built-in engine and
through ComfyUI give the same image, on the full-width random-weight SD1.5 checkpoint of ``test_parity_real``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.test_parity_real import CHECKPOINT, assert_same, builtin, image, sd15  # noqa: F401


def _base() -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red fox in the snow"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "parity"}},
    }


def advanced_cfg() -> dict[str, Any]:
    """SamplerCustomAdvanced with CFGGuider, KSamplerSelect, BasicScheduler and RandomNoise."""
    return {
        **_base(),
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": 42}},
        "11": {
            "class_type": "CFGGuider",
            "inputs": {"model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "cfg": 7.0},
        },
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m_sde"}},
        "13": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 4, "denoise": 1.0},
        },
        "3": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["10", 0],
                "guider": ["11", 0],
                "sampler": ["12", 0],
                "sigmas": ["13", 0],
                "latent_image": ["5", 0],
            },
        },
    }


def custom_split() -> dict[str, Any]:
    """SamplerCustom over the high half of split Karras sigmas with a parameterised ancestral sampler, then
    SamplerCustomAdvanced with BasicGuider and DisableNoise over the low half (its denoised output decoded)."""
    return {
        **_base(),
        "10": {
            "class_type": "KarrasScheduler",
            "inputs": {"steps": 6, "sigma_max": 14.614642, "sigma_min": 0.0291675, "rho": 7.0},
        },
        "11": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["10", 0], "step": 3}},
        "12": {"class_type": "SamplerEulerAncestral", "inputs": {"eta": 0.5, "s_noise": 0.7}},
        "13": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["4", 0],
                "add_noise": True,
                "noise_seed": 42,
                "cfg": 6.0,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "sampler": ["12", 0],
                "sigmas": ["11", 0],
                "latent_image": ["5", 0],
            },
        },
        "14": {"class_type": "DisableNoise", "inputs": {}},
        "15": {"class_type": "BasicGuider", "inputs": {"model": ["4", 0], "conditioning": ["6", 0]}},
        "16": {
            "class_type": "SamplerDPMPP_SDE",
            "inputs": {"eta": 1.0, "s_noise": 1.0, "r": 0.5, "noise_device": "cpu"},
        },
        "3": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["14", 0],
                "guider": ["15", 0],
                "sampler": ["16", 0],
                "sigmas": ["11", 1],
                "latent_image": ["13", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 1], "vae": ["4", 2]}},
    }


def turbo() -> dict[str, Any]:
    """SDTurboScheduler with SamplerCustom and KSamplerSelect (the sdxlturbo_example graph on SD1.5)."""
    return {
        **_base(),
        "10": {"class_type": "SDTurboScheduler", "inputs": {"model": ["4", 0], "steps": 2, "denoise": 1.0}},
        "12": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "3": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["4", 0],
                "add_noise": True,
                "noise_seed": 7,
                "cfg": 1.0,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "sampler": ["12", 0],
                "sigmas": ["10", 0],
                "latent_image": ["5", 0],
            },
        },
    }


PARAMETERISED_SAMPLERS: dict[str, dict[str, Any]] = {
    "SamplerDPMAdaptative": {  # DPM-Solver-12, a PID controller and ancestral steps, loose tolerances (few steps)
        "order": 2,
        "rtol": 0.2,
        "atol": 0.05,
        "h_init": 0.5,
        "pcoeff": 0.2,
        "icoeff": 0.8,
        "dcoeff": 0.1,
        "accept_safety": 0.81,
        "eta": 0.5,
        "s_noise": 0.9,
    },
    "SamplerER_SDE": {"solver_type": "Reverse-time SDE", "max_stage": 2, "eta": 0.5, "s_noise": 0.8},
    "SamplerSASolver": {
        "model": ["4", 0],
        "eta": 0.7,
        "sde_start_percent": 0.1,
        "sde_end_percent": 0.9,
        "s_noise": 0.9,
        "predictor_order": 2,
        "corrector_order": 2,
        "use_pece": True,
        "simple_order_2": True,
    },
}


def parameterised(sampler: str) -> dict[str, Any]:
    """SamplerCustom over BasicScheduler's Karras sigmas with one of the parameterised sampler nodes."""
    return {
        **_base(),
        "10": {
            "class_type": "BasicScheduler",
            "inputs": {"model": ["4", 0], "scheduler": "karras", "steps": 5, "denoise": 1.0},
        },
        "12": {"class_type": sampler, "inputs": PARAMETERISED_SAMPLERS[sampler]},
        "3": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["4", 0],
                "add_noise": True,
                "noise_seed": 11,
                "cfg": 6.0,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "sampler": ["12", 0],
                "sigmas": ["10", 0],
                "latent_image": ["5", 0],
            },
        },
    }


@pytest.mark.timeout(900)  # the module's first test: it writes the full-width checkpoint and both engines load it
@pytest.mark.parametrize("sampler", list(PARAMETERISED_SAMPLERS))
def test_parameterised_samplers_same_image_on_both_backends(
    backend: ComfyUIBackend,
    builtin: BuiltinBackend,  # noqa: F811
    sd15: Path,  # noqa: F811
    sampler: str,
    tmp_path: Path,
) -> None:
    prompt = parameterised(sampler)
    theirs = image(backend, prompt, tmp_path / "comfyui")
    ours = image(builtin, prompt, tmp_path / "builtin")
    assert theirs.shape == (64, 64, 3)
    assert_same("SD1.5", sampler, "karras", theirs, ours)


@pytest.mark.parametrize("workflow", [advanced_cfg, custom_split, turbo], ids=lambda fn: fn.__name__)
def test_custom_sampling_same_image_on_both_backends(
    backend: ComfyUIBackend,
    builtin: BuiltinBackend,  # noqa: F811
    sd15: Path,  # noqa: F811
    workflow: Any,
    tmp_path: Path,
) -> None:
    prompt = workflow()
    theirs = image(backend, prompt, tmp_path / "comfyui")
    ours = image(builtin, prompt, tmp_path / "builtin")
    assert theirs.shape == (64, 64, 3)
    assert_same("SD1.5", workflow.__name__, "custom", theirs, ours)
