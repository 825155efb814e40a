"""Noise schedules and schedulers against their published formulas and ComfyUI's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import SamplingSettings
from comfyserve.models.sampling.ksampler import slice_steps, step_sigmas
from comfyserve.models.sampling.schedule import ZSNR_TERMINAL_ALPHA_BAR, schedule_for
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES, calculate_sigmas

SD = schedule_for(SamplingSettings())


def _reference_sigmas() -> np.ndarray:
    """SD's schedule from its definition, independently: scaled-linear betas, alpha_bar, sigma."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    alpha_bar = np.cumprod(1 - betas)
    return np.sqrt((1 - alpha_bar) / alpha_bar)


def _sigma_at(t: np.ndarray | float) -> np.ndarray:
    """Sigma at fractional timesteps, log-sigma interpolated linearly."""
    return np.exp(np.interp(t, np.arange(1000), np.log(_reference_sigmas())))


def test_sd_schedule_matches_its_definition() -> None:
    assert SD.sigmas.dtype == torch.float32 and len(SD.sigmas) == 1000
    np.testing.assert_allclose(SD.sigmas.numpy(), _reference_sigmas(), rtol=1e-6)
    assert SD.sigma_min == pytest.approx(0.0291675, abs=1e-6)
    assert SD.sigma_max == pytest.approx(14.614642, abs=1e-5)


def test_timestep_and_sigma_map_both_ways() -> None:
    for k in (0, 1, 500, 998, 999):
        assert SD.timestep(float(SD.sigmas[k])) == k
        assert SD.sigma(k) == pytest.approx(float(SD.sigmas[k]), rel=1e-6)
    assert SD.sigma(250.5) == pytest.approx(math.sqrt(float(SD.sigmas[250]) * float(SD.sigmas[251])), rel=1e-6)
    assert SD.sigma(-5) == pytest.approx(SD.sigma_min) and SD.sigma(5000) == pytest.approx(SD.sigma_max)
    assert SD.timestep(1e-6) == 0 and SD.timestep(1e6) == 999
    assert SD.percent_to_sigma(0.0) > 1e8 and SD.percent_to_sigma(1.0) == 0.0
    assert SD.percent_to_sigma(0.5) == pytest.approx(float(_sigma_at(499.5)), rel=1e-6)


def test_zero_terminal_snr_rescales_sqrt_alpha_bar_linearly() -> None:
    zsnr = schedule_for(SamplingSettings(zsnr=True))
    root = 1 / np.sqrt(1 + _reference_sigmas() ** 2)
    expected = (root - root[-1]) * root[0] / (root[0] - root[-1])
    got = 1 / np.sqrt(1 + zsnr.sigmas.double().numpy() ** 2)
    np.testing.assert_allclose(got[:-1], expected[:-1], rtol=1e-5)
    assert zsnr.sigma_min == pytest.approx(SD.sigma_min, rel=1e-6)
    assert zsnr.sigma_max == pytest.approx(math.sqrt((1 - ZSNR_TERMINAL_ALPHA_BAR) / ZSNR_TERMINAL_ALPHA_BAR), rel=1e-5)
    assert bool((zsnr.sigmas[1:] > zsnr.sigmas[:-1]).all())


def test_lcm_schedule_keeps_every_twentieth_timestep() -> None:
    lcm = schedule_for(SamplingSettings(prediction="lcm"))
    assert len(lcm.sigmas) == 50
    assert torch.equal(lcm.sigmas, SD.sigmas[19::20])
    assert lcm.timestep(float(SD.sigmas[999])) == 999
    assert lcm.timestep(float(SD.sigmas[19])) == 19
    assert lcm.timestep(float(SD.sigmas[500])) in (499, 519)
    assert lcm.sigma(39) == pytest.approx(float(SD.sigmas[39]), rel=1e-6)


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 5, 20, 37])
def test_every_scheduler_descends_to_zero(scheduler: str, steps: int) -> None:
    sigmas = calculate_sigmas(SD, scheduler, steps)
    assert sigmas.dtype == torch.float32
    assert float(sigmas[-1]) == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all()), sigmas
    if scheduler != "beta":
        assert len(sigmas) == steps + 1
    if scheduler != "ddim_uniform":
        assert float(sigmas[0]) == pytest.approx(SD.sigma_max, rel=1e-6)


def test_karras_is_eq_5_of_karras_et_al() -> None:
    n, rho = 12, 7.0
    sigmas = calculate_sigmas(SD, "karras", n)
    lo, hi = SD.sigma_min ** (1 / rho), SD.sigma_max ** (1 / rho)
    expected = [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=1e-5)
    assert float(sigmas[-2]) == pytest.approx(SD.sigma_min, rel=1e-5)


def test_exponential_and_kl_optimal_are_uniform_in_their_variables() -> None:
    log_steps = np.diff(np.log(calculate_sigmas(SD, "exponential", 9).numpy()[:-1]))
    np.testing.assert_allclose(log_steps, log_steps[0], rtol=1e-4)
    angles = np.diff(np.arctan(calculate_sigmas(SD, "kl_optimal", 9).double().numpy()[:-1]))
    np.testing.assert_allclose(angles, angles[0], rtol=1e-4)


def test_normal_and_sgm_uniform_space_timesteps_evenly() -> None:
    np.testing.assert_allclose(
        calculate_sigmas(SD, "normal", 10).numpy()[:-1], _sigma_at(np.linspace(999, 0, 10)), rtol=1e-5
    )
    np.testing.assert_allclose(
        calculate_sigmas(SD, "sgm_uniform", 10).numpy()[:-1], _sigma_at(np.linspace(999, 0, 11)[:-1]), rtol=1e-5
    )
    # ComfyUI's published 10-step "normal" schedule for SD1.x.
    np.testing.assert_allclose(
        calculate_sigmas(SD, "normal", 10).numpy(),
        [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0.0],
        atol=1e-4,
    )


def test_simple_ddim_uniform_and_beta_pick_model_sigmas() -> None:
    reference = _reference_sigmas()
    simple = calculate_sigmas(SD, "simple", 8).numpy()
    np.testing.assert_allclose(simple[:-1], [reference[-(1 + int(i * 1000 / 8))] for i in range(8)], rtol=1e-6)
    ddim = calculate_sigmas(SD, "ddim_uniform", 20).numpy()
    np.testing.assert_allclose(ddim[:-1], reference[1:1000:50][::-1], rtol=1e-6)
    beta = calculate_sigmas(SD, "beta", 10).numpy()
    timesteps = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, 10, endpoint=False), 0.6, 0.6) * 999)
    np.testing.assert_allclose(beta[:-1], reference[timesteps.astype(int)], rtol=1e-6)


def test_linear_quadratic_is_linear_then_quadratic() -> None:
    sigmas = calculate_sigmas(SD, "linear_quadratic", 10).double().numpy() / SD.sigma_max
    np.testing.assert_allclose(np.diff(sigmas[:6]), -0.025 / 5, rtol=1e-4)
    assert np.diff(sigmas[5:], 2).min() < 0  # accelerating descent in the quadratic part


def test_unknown_scheduler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'nope'"):
        calculate_sigmas(SD, "nope", 10)
    with pytest.raises(NodeInputError, match="unknown scheduler 'nope'"):
        step_sigmas(SD, "euler", "nope", 10)
    with pytest.raises(NodeInputError, match="unknown sampler 'nope'"):
        step_sigmas(SD, "nope", "normal", 10)


def test_denoise_keeps_the_tail_of_a_longer_schedule() -> None:
    full = calculate_sigmas(SD, "karras", 20)
    assert torch.equal(step_sigmas(SD, "euler", "karras", 10, denoise=0.5), full[-11:])
    assert torch.equal(step_sigmas(SD, "euler", "karras", 10, denoise=0.3), calculate_sigmas(SD, "karras", 33)[-11:])
    assert len(step_sigmas(SD, "euler", "karras", 10, denoise=0.0)) == 0
    assert torch.equal(step_sigmas(SD, "euler", "karras", 10, denoise=1.0), calculate_sigmas(SD, "karras", 10))


def test_some_samplers_drop_the_penultimate_sigma() -> None:
    for sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"):
        longer = calculate_sigmas(SD, "normal", 11)
        got = step_sigmas(SD, sampler, "normal", 10)
        assert len(got) == 11
        assert torch.equal(got, torch.cat([longer[:-2], longer[-1:]]))


def _window(sigmas: torch.Tensor, start: int | None, last: int | None, full: bool) -> torch.Tensor:
    window = slice_steps(sigmas, start, last, full)
    assert window is not None
    return window


def test_step_window_slicing() -> None:
    sigmas = calculate_sigmas(SD, "normal", 10)
    assert torch.equal(_window(sigmas, 3, None, False), sigmas[3:])
    assert torch.equal(_window(sigmas, 0, 4, False), sigmas[:5])
    finished = _window(sigmas, 0, 4, True)
    assert float(finished[-1]) == 0.0 and torch.equal(finished[:-1], sigmas[:4])
    assert float(sigmas[4]) != 0.0  # slicing copied: the schedule itself is untouched
    assert torch.equal(_window(sigmas, 0, 10000, True), sigmas)
    assert slice_steps(sigmas, 10, None, False) is None
    assert slice_steps(sigmas, 4, 4, True) is None
