"""The custom sampling nodes: catalog entries equal to ComfyUI 0.3.64's, sigma nodes exact against ComfyUI's
values, and SamplerCustom / SamplerCustomAdvanced sampling as KSampler does on the same seed, steps and cfg.

``tests/data/comfyui_object_info/custom_sampling.json`` holds the real ComfyUI's ``/object_info`` entries of
these classes; ``tests/data/comfyui_sigmas.json`` the SIGMAS its nodes return for SD1.5's discrete schedule
(both read from an unmodified ComfyUI 0.3.64 on the CPU).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.cli import main
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import NodeInputError
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.handles import DiffusionModel
from comfyserve.models.sampling.driver import Noise
from comfyserve.models.sampling.sa_solver import _weights as sa_weights
from comfyserve.nodes import builtin_registry
from comfyserve.nodes import custom_sampling as cs
from comfyserve.nodes.conditioning import CLIPTextEncode
from comfyserve.nodes.latent import EmptyLatentImage, SetLatentNoiseMask
from comfyserve.nodes.sampling import KSampler, KSamplerAdvanced
from tests.unit.fake_unet import cond, fake_model
from tests.unit.models_fixtures import SD1, tiny_models  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = json.loads((DATA / "comfyui_object_info" / "custom_sampling.json").read_text())
SIGMAS = json.loads((DATA / "comfyui_sigmas.json").read_text())
POSITIVE, NEGATIVE = cond(1.0), cond(-1.0)


def _entry(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("python_module", "comfyserve")}


def test_every_class_of_the_pack_has_comfyui_s_catalog_entry() -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()
    assert sorted(cs.NODE_CLASS_MAPPINGS) == sorted(REFERENCE)
    for name, reference in REFERENCE.items():
        assert _entry(ours[name]) == _entry(reference), name


def test_the_entries_survive_the_catalog_round_trip() -> None:
    """The edge reads the packaged catalog: ``["MODEL", {}]`` and DisableNoise's empty ``required`` stay."""
    exported = Catalog.from_registry(builtin_registry()).to_object_info()
    again = Catalog.from_object_info(exported).to_object_info()
    assert again["DisableNoise"]["input"] == {"required": {}}
    assert again["SamplingPercentToSigma"]["input"]["required"]["model"] == ["MODEL", {}]


def _float32(values: list[float]) -> list[float]:
    """``values`` rounded to float32, as ComfyUI's SIGMAS tensors hold them."""
    return torch.tensor(values, dtype=torch.float32).tolist()


def _exact(values: torch.Tensor, expected: list[float]) -> None:
    assert values.dtype == torch.float32
    assert values.tolist() == _float32(expected)


@pytest.mark.parametrize(
    ("node", "args", "key"),
    [
        (cs.KarrasScheduler, (5, 14.614642, 0.0291675, 7.0), "karras"),
        (cs.ExponentialScheduler, (5, 14.614642, 0.0291675), "exponential"),
        (cs.PolyexponentialScheduler, (5, 14.614642, 0.0291675, 2.0), "polyexponential"),
        (cs.LaplaceScheduler, (6, 14.614642, 0.0291675, 0.0, 0.5), "laplace"),
        (cs.VPScheduler, (5, 19.9, 0.1, 0.001), "vp"),
    ],
)
def test_range_schedulers_match_comfyui(node: Any, args: tuple[Any, ...], key: str) -> None:
    (sigmas,) = node().get_sigmas(*args)
    assert sigmas.dtype == torch.float32 and sigmas.tolist() == _float32(SIGMAS[key])


@pytest.mark.parametrize(
    ("node", "args", "key"),
    [
        (cs.BasicScheduler, ("karras", 4, 0.5), "basic_karras_0.5"),
        (cs.BasicScheduler, ("normal", 5, 1.0), "basic_normal"),
        (cs.BetaSamplingScheduler, (6, 0.6, 0.6), "beta"),
        (cs.SDTurboScheduler, (2, 1.0), "sdturbo_2_1.0"),
        (cs.SDTurboScheduler, (3, 0.55), "sdturbo_3_0.55"),
    ],
)
def test_model_schedulers_match_comfyui(node: Any, args: tuple[Any, ...], key: str) -> None:
    (sigmas,) = node().get_sigmas(fake_model(), *args)
    assert sigmas.dtype == torch.float32 and sigmas.tolist() == _float32(SIGMAS[key])


def test_basic_scheduler_at_denoise_0_is_empty() -> None:
    assert cs.BasicScheduler().get_sigmas(fake_model(), "normal", 5, 0.0)[0].shape == (0,)


def test_sampling_percent_to_sigma_matches_comfyui() -> None:
    node, model = cs.SamplingPercentToSigma(), fake_model()
    assert node.get_sigma(model, 0.3, False)[0] == SIGMAS["percent_0.3"]
    assert node.get_sigma(model, 0.0, True)[0] == SIGMAS["percent_0_actual"]
    assert node.get_sigma(model, 0.0, False)[0] == SIGMAS["percent_0"]


def test_sigma_cutting_nodes_match_comfyui() -> None:
    sigmas = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.0])
    for got, expected in zip(cs.SplitSigmasDenoise().get_sigmas(sigmas, 0.5), SIGMAS["split_denoise_0.5"], strict=True):
        _exact(got, expected)
    for got, expected in zip(cs.SplitSigmasDenoise().get_sigmas(sigmas, 0.0), SIGMAS["split_denoise_0"], strict=True):
        _exact(got, expected)
    for got, expected in zip(cs.SplitSigmas().get_sigmas(sigmas, 2), SIGMAS["split_2"], strict=True):
        _exact(got, expected)
    _exact(cs.FlipSigmas().get_sigmas(sigmas)[0], SIGMAS["flip"])
    assert sigmas[0] == pytest.approx(14.6)  # the input is not changed in place
    _exact(cs.SetFirstSigma().set_first_sigma(sigmas, 20.0)[0], [20.0, 7.0, 3.0, 1.0, 0.0])


def test_bad_scheduler_parameters_get_a_clear_error() -> None:
    with pytest.raises(NodeInputError, match=r"rho must be greater than 0, got 0\.0"):
        cs.KarrasScheduler().get_sigmas(5, 14.6, 0.03, 0.0)
    with pytest.raises(NodeInputError, match="sigma_max and sigma_min greater than 0"):
        cs.ExponentialScheduler().get_sigmas(5, 14.6, 0.0)
    with pytest.raises(NodeInputError, match="needs at least one sigma"):
        cs.SetFirstSigma().set_first_sigma(torch.zeros(0), 1.0)
    with pytest.raises(NodeInputError, match="unknown sampler 'nope'"):
        cs.KSamplerSelect().get_sampler("nope")


def _latent(batch: int = 1) -> dict[str, Any]:
    return EmptyLatentImage().generate(64, 64, batch)[0]


def _ksampler(model: DiffusionModel, sampler: str, scheduler: str, latent: dict[str, Any], **kw: Any) -> torch.Tensor:
    args = {"seed": 5, "steps": 4, "cfg": 7.0, "positive": POSITIVE, "negative": NEGATIVE}
    return KSampler().sample(model, sampler_name=sampler, scheduler=scheduler, latent_image=latent, **{**args, **kw})[
        0
    ]["samples"]


def _advanced(model: DiffusionModel, sampler: Any, scheduler: str, latent: dict[str, Any]) -> dict[str, Any]:
    sigmas = cs.BasicScheduler().get_sigmas(model, scheduler, 4, 1.0)[0]
    guider = cs.CFGGuider().get_guider(model, POSITIVE, NEGATIVE, 7.0)[0]
    noise = cs.RandomNoise().get_noise(5)[0]
    return cs.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)[0]


@pytest.mark.parametrize(
    ("name", "scheduler"),
    [("euler", "normal"), ("euler_ancestral", "karras"), ("dpmpp_2m_sde", "karras"), ("dpmpp_sde", "normal")],
)
def test_sampler_custom_advanced_gives_ksampler_s_latent(name: str, scheduler: str) -> None:
    model = fake_model()
    sampler = cs.KSamplerSelect().get_sampler(name)[0]
    got = _advanced(model, sampler, scheduler, _latent(2))["samples"]
    assert torch.equal(got, _ksampler(model, name, scheduler, _latent(2)))


@pytest.mark.parametrize(
    ("node", "args", "name"),
    [
        (cs.SamplerEulerAncestral, (1.0, 1.0), "euler_ancestral"),
        (cs.SamplerDPMPP_2S_Ancestral, (1.0, 1.0), "dpmpp_2s_ancestral"),
        (cs.SamplerDPMPP_SDE, (1.0, 1.0, 0.5, "cpu"), "dpmpp_sde"),
        (cs.SamplerDPMPP_2M_SDE, ("heun", 1.0, 1.0, "gpu"), "dpmpp_2m_sde_heun"),
        (cs.SamplerDPMPP_3M_SDE, (1.0, 1.0, "cpu"), "dpmpp_3m_sde"),
        (cs.SamplerLMS, (4,), "lms"),
        (cs.SamplerEulerAncestralCFGPP, (1.0, 1.0), "euler_ancestral_cfg_pp"),
        (cs.SamplerDPMAdaptative, (3, 0.05, 0.0078, 0.05, 0.0, 1.0, 0.0, 0.81, 0.0, 1.0), "dpm_adaptive"),
        (cs.SamplerER_SDE, ("ER-SDE", 3, 1.0, 1.0), "er_sde"),
        (cs.SamplerSASolver, ("model", 1.0, 0.2, 0.8, 1.0, 3, 4, False, False), "sa_solver"),
        (cs.SamplerSASolver, ("model", 1.0, 0.2, 0.8, 1.0, 3, 4, True, False), "sa_solver_pece"),
    ],
)
def test_sampler_nodes_at_their_defaults_are_the_named_sampler(node: Any, args: tuple[Any, ...], name: str) -> None:
    model = fake_model()
    args = tuple(model if a == "model" else a for a in args)
    got = _advanced(model, node().get_sampler(*args)[0], "karras", _latent())["samples"]
    assert torch.equal(got, _ksampler(model, name, "karras", _latent()))


def test_eta_0_makes_an_ancestral_sampler_deterministic_and_s_noise_scales_the_noise() -> None:
    model = fake_model()
    quiet = cs.SamplerEulerAncestral().get_sampler(0.0, 1.0)[0]
    assert torch.equal(
        _advanced(model, quiet, "karras", _latent())["samples"], _ksampler(model, "euler", "karras", _latent())
    )
    loud = cs.SamplerEulerAncestral().get_sampler(1.0, 2.0)[0]
    default = cs.SamplerEulerAncestral().get_sampler(1.0, 1.0)[0]
    assert not torch.equal(
        _advanced(model, loud, "karras", _latent())["samples"],
        _advanced(model, default, "karras", _latent())["samples"],
    )


def _with_seed(model: DiffusionModel, sampler: Any, seed: int) -> torch.Tensor:
    sigmas = cs.BasicScheduler().get_sigmas(model, "karras", 4, 1.0)[0]
    guider = cs.CFGGuider().get_guider(model, POSITIVE, NEGATIVE, 7.0)[0]
    noise = Noise(seed, enabled=False)  # no starting noise: only the sampler's own draws use the seed
    return cs.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, _latent())[0]["samples"]


def _varies_with_the_seed(model: DiffusionModel, sampler: Any) -> bool:
    return not torch.equal(_with_seed(model, sampler, 1), _with_seed(model, sampler, 2))


def test_the_er_sde_ode_draws_no_noise_and_is_the_reverse_time_sde_at_eta_0() -> None:
    model, node = fake_model(), cs.SamplerER_SDE()
    ode = node.get_sampler("ODE", 3, 1.0, 1.0)[0]
    at_0 = node.get_sampler("Reverse-time SDE", 3, 0.0, 1.0)[0]
    assert torch.equal(_with_seed(model, ode, 1), _with_seed(model, at_0, 2))
    stochastic = node.get_sampler("Reverse-time SDE", 3, 0.5, 1.0)[0]
    lower_stage = node.get_sampler("ODE", 1, 1.0, 1.0)[0]
    results = [_with_seed(model, s, 1) for s in (ode, stochastic, lower_stage)]
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[0], results[2])
    with pytest.raises(NodeInputError, match="unknown solver_type 'SDE'"):
        node.get_sampler("SDE", 3, 1.0, 1.0)


def test_sa_solver_noise_window_eta_and_simple_order_2() -> None:
    model, node = fake_model(), cs.SamplerSASolver()
    ode = node.get_sampler(model, 0.0, 0.2, 0.8, 1.0, 3, 4, False, False)[0]
    no_window = node.get_sampler(model, 1.0, 0.9, 0.95, 1.0, 3, 4, False, False)[0]  # karras' 4 sigmas miss it
    silent = node.get_sampler(model, 1.0, 0.2, 0.8, 0.0, 3, 4, False, False)[0]
    assert torch.equal(_with_seed(model, ode, 1), _with_seed(model, no_window, 2))
    assert not _varies_with_the_seed(model, silent)
    assert _varies_with_the_seed(model, node.get_sampler(model, 0.5, 0.0, 1.0, 1.0, 3, 4, False, False)[0])
    simple = node.get_sampler(model, 0.0, 0.2, 0.8, 1.0, 2, 2, False, True)[0]
    general = node.get_sampler(model, 0.0, 0.2, 0.8, 1.0, 2, 2, False, False)[0]
    assert not torch.equal(_with_seed(model, simple, 1), _with_seed(model, general, 1))
    lambdas = torch.tensor([14.6, 5.2, 1.3, 0.4]).log().neg()
    for tau, corrector in itertools.product((0.0, 0.7), (False, True)):
        ends = (lambdas[1], lambdas[2]) if corrector else (lambdas[2], lambdas[3])
        weights = [sa_weights(lambdas[1:3], *ends, tau, simple, corrector) for simple in (True, False)]
        whole = -math.expm1(-(1 + tau**2) * float(ends[1] - ends[0]))  # both integrate the constant exactly
        assert [float(w.sum()) for w in weights] == pytest.approx([whole, whole], rel=1e-5)
        assert not torch.allclose(weights[0], weights[1])


def test_dpm_adaptive_orders_pid_and_eta() -> None:
    model, node = fake_model(), cs.SamplerDPMAdaptative()
    default = (3, 0.05, 0.0078, 0.05, 0.0, 1.0, 0.0, 0.81, 0.0, 1.0)
    results = {
        "default": node.get_sampler(*default)[0],
        "order 2": node.get_sampler(2, *default[1:])[0],
        "pid": node.get_sampler(3, 0.05, 0.0078, 0.05, 0.3, 0.7, 0.2, 0.81, 0.0, 1.0)[0],
    }
    latents = {name: _with_seed(model, sampler, 1) for name, sampler in results.items()}
    assert not torch.equal(latents["default"], latents["order 2"]) and not torch.equal(
        latents["default"], latents["pid"]
    )
    assert not any(_varies_with_the_seed(model, s) for s in results.values())
    ancestral = node.get_sampler(3, 0.05, 0.0078, 0.05, 0.0, 1.0, 0.0, 0.81, 1.0, 1.0)[0]
    assert _varies_with_the_seed(model, ancestral)


def test_sampler_custom_is_cfg_guider_with_random_noise() -> None:
    model = fake_model()
    sampler = cs.KSamplerSelect().get_sampler("euler")[0]
    sigmas = cs.BasicScheduler().get_sigmas(model, "normal", 4, 1.0)[0]
    out, denoised = cs.SamplerCustom().sample(model, True, 5, 7.0, POSITIVE, NEGATIVE, sampler, sigmas, _latent())
    assert torch.equal(out["samples"], _ksampler(model, "euler", "normal", _latent()))
    # Euler's last step into sigma 0 lands on the last prediction: denoised_output is that prediction.
    assert denoised is not out and torch.allclose(denoised["samples"], out["samples"], atol=1e-5)
    high, _ = cs.SplitSigmas().get_sigmas(sigmas, 2)
    out, denoised = cs.SamplerCustom().sample(model, True, 5, 7.0, POSITIVE, NEGATIVE, sampler, high, _latent())
    assert not torch.allclose(denoised["samples"], out["samples"], atol=1e-2)  # stopped at a noisy sigma


def test_basic_guider_is_cfg_1_and_disable_noise_is_add_noise_off() -> None:
    model = fake_model()
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    sampler = cs.KSamplerSelect().get_sampler("euler")[0]
    sigmas = cs.BasicScheduler().get_sigmas(model, "normal", 4, 1.0)[0]
    guider = cs.BasicGuider().get_guider(model, POSITIVE)[0]
    got = cs.SamplerCustomAdvanced().sample(cs.DisableNoise().get_noise()[0], guider, sampler, sigmas, latent)[0]
    expected = KSamplerAdvanced().sample(
        model, "disable", 5, 4, 1.0, "euler", "normal", POSITIVE, NEGATIVE, latent, 0, 10000, "disable"
    )[0]
    assert torch.equal(got["samples"], expected["samples"])


def test_split_sigmas_runs_like_ksampler_advanced_in_two_halves() -> None:
    model = fake_model()
    sampler = cs.KSamplerSelect().get_sampler("euler")[0]
    sigmas = cs.BasicScheduler().get_sigmas(model, "normal", 6, 1.0)[0]
    high, low = cs.SplitSigmas().get_sigmas(sigmas, 3)
    guider = cs.CFGGuider().get_guider(model, POSITIVE, NEGATIVE, 7.0)[0]
    first = cs.SamplerCustomAdvanced().sample(cs.RandomNoise().get_noise(5)[0], guider, sampler, high, _latent())[0]
    second = cs.SamplerCustomAdvanced().sample(cs.DisableNoise().get_noise()[0], guider, sampler, low, first)[0]
    whole = _ksampler(model, "euler", "normal", _latent(), steps=6)
    assert torch.allclose(second["samples"], whole, atol=1e-5)


def test_a_noise_mask_is_honoured_and_empty_sigmas_return_the_latent() -> None:
    model = fake_model()
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    latent = SetLatentNoiseMask().set_mask(_latent(), mask)[0]
    sampler = cs.KSamplerSelect().get_sampler("euler")[0]
    got = _advanced(model, sampler, "normal", latent)["samples"]
    assert torch.equal(got, _ksampler(model, "euler", "normal", latent))
    out, denoised = cs.SamplerCustomAdvanced().sample(
        cs.RandomNoise().get_noise(5)[0],
        cs.BasicGuider().get_guider(model, POSITIVE)[0],
        sampler,
        torch.zeros(0),
        latent,
    )
    assert out is denoised and torch.equal(out["samples"], latent["samples"])


def test_sampler_custom_advanced_equals_ksampler_on_a_tiny_sd15(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SD1)
    positive = CLIPTextEncode().encode(clip, "a red barn")[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    expected = KSampler().sample(model, 11, 3, 6.0, "dpmpp_2m", "karras", positive, negative, latent)[0]["samples"]
    sigmas = cs.BasicScheduler().get_sigmas(model, "karras", 3, 1.0)[0]
    guider = cs.CFGGuider().get_guider(model, positive, negative, 6.0)[0]
    sampler = cs.KSamplerSelect().get_sampler("dpmpp_2m")[0]
    got = cs.SamplerCustomAdvanced().sample(cs.RandomNoise().get_noise(11)[0], guider, sampler, sigmas, latent)[0]
    assert torch.equal(got["samples"], expected)


def test_bad_sigmas_get_a_clear_error() -> None:
    model = fake_model()
    sampler = cs.KSamplerSelect().get_sampler("euler")[0]
    guider = cs.BasicGuider().get_guider(model, POSITIVE)[0]
    with pytest.raises(NodeInputError, match="sigmas must be a SIGMAS"):
        cs.SamplerCustomAdvanced().sample(
            cs.RandomNoise().get_noise(1)[0], guider, sampler, torch.zeros(2, 2), _latent()
        )


def test_the_sdxl_turbo_template_runs_end_to_end(tiny_models: Path, tmp_path: Path) -> None:  # noqa: F811
    """ComfyUI's ``sdxlturbo_example`` template (API format, a tiny SDXL stand-in, 256²): SamplerCustom with
    KSamplerSelect and SDTurboScheduler."""
    out = tmp_path / "out"
    assert (
        main(["run", str(DATA / "sdxl_turbo_custom_sampling.json"), "--out", str(out), "--models", str(tiny_models)])
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "success"
    assert [o["node_id"] for o in manifest["outputs"]] == ["27"]
    assert Path(manifest["outputs"][0]["path"]).is_file()
