"""The denoiser the samplers call: prediction types, classifier-free guidance, conditioning entries."""

from __future__ import annotations

import math

import pytest
import torch

from comfyserve.engine.errors import NodeInputError
from comfyserve.models.handles import DiffusionModel, ModelFamily
from comfyserve.models.sampling.conditioning import BLANK_INPAINT_LATENT, SamplingInputs, prepare_conds
from comfyserve.models.sampling.guidance import Guider
from comfyserve.models.sampling.prediction import input_scale, to_denoised
from comfyserve.models.sampling.schedule import schedule_for
from tests.unit.fake_unet import CONTEXT_DIM, FakeUNet, cond, fake_model

X = torch.linspace(-2, 2, 2 * 4 * 3 * 3).reshape(2, 4, 3, 3)


def _guider(model: DiffusionModel, positive: list, negative: list, cfg: float, latent: torch.Tensor = X) -> Guider:
    schedule = schedule_for(model.sampling)
    inputs = SamplingInputs(latent=torch.zeros_like(latent), denoise_mask=None, device=X.device, dtype=torch.float32)
    return Guider(
        model,
        schedule,
        prepare_conds(model, schedule, positive, "positive", inputs),
        prepare_conds(model, schedule, negative, "negative", inputs),
        cfg,
    )


def _unet(model: DiffusionModel) -> FakeUNet:
    assert isinstance(model.unet, FakeUNet)
    return model.unet


def test_prediction_types_recover_x0() -> None:
    generator = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    sigma = 3.0
    x = x0 + sigma * eps
    torch.testing.assert_close(to_denoised("eps", x, eps, sigma, 500.0), x0)
    v = (eps - sigma * x0) / math.sqrt(1 + sigma * sigma)
    torch.testing.assert_close(to_denoised("v_prediction", x, v, sigma, 500.0), x0)
    torch.testing.assert_close(to_denoised("x0", x, x0, sigma, 500.0), x0)
    assert input_scale("eps", sigma) == pytest.approx(1 / math.sqrt(10)) and input_scale("img_to_img", sigma) == 1.0


def test_lcm_applies_its_boundary_condition() -> None:
    x, output, sigma = torch.tensor([2.0]), torch.tensor([0.5]), 1.5
    torch.testing.assert_close(to_denoised("lcm", x, output, sigma, 0.0), x)  # c_skip 1, c_out 0 at t = 0
    t = 999.0
    scaled = 10 * t
    c_skip, c_out = 0.25 / (scaled**2 + 0.25), scaled / math.sqrt(scaled**2 + 0.25)
    torch.testing.assert_close(to_denoised("lcm", x, output, sigma, t), c_out * (x - output * sigma) + c_skip * x)
    with pytest.raises(ValueError, match="unknown prediction type 'nope'"):
        to_denoised("nope", x, output, sigma, t)


def test_unet_gets_scaled_input_and_model_timestep() -> None:
    model = fake_model()
    sigma = float(schedule_for(model.sampling).sigmas[600])
    denoised = _guider(model, cond(1.0), cond(0.0), 1.0)(X, sigma)
    (call,) = _unet(model).calls
    torch.testing.assert_close(call["sample"], X / math.sqrt(sigma * sigma + 1))
    assert call["timestep"].tolist() == [600.0, 600.0]
    torch.testing.assert_close(denoised, X - (call["sample"] * 0.5 + 0.1) * sigma)


def test_cfg_combines_cond_and_uncond_in_one_batch() -> None:
    model = fake_model()
    cond_only = _guider(model, cond(1.0), cond(-1.0), 1.0)(X, 2.0)
    uncond_only = _guider(model, cond(-1.0), cond(1.0), 1.0)(X, 2.0)
    unet = _unet(model)
    unet.calls.clear()
    guided = _guider(model, cond(1.0), cond(-1.0), 7.5)(X, 2.0)
    torch.testing.assert_close(guided, uncond_only + (cond_only - uncond_only) * 7.5)
    assert [call["sample"].shape[0] for call in unet.calls] == [4]


def test_cfg_one_never_runs_the_negative() -> None:
    model = fake_model()
    with_negative = _guider(model, cond(1.0), cond(-1.0), 1.0)(X, 2.0)
    other_negative = _guider(model, cond(1.0), cond(5.0, tokens=154), 1.0)(X, 2.0)
    assert torch.equal(with_negative, other_negative)
    assert [call["sample"].shape[0] for call in _unet(model).calls] == [2, 2]


def test_cfg_pp_samplers_get_the_unguided_prediction_even_at_cfg_one() -> None:
    model = fake_model()
    uncond_only = _guider(model, cond(-1.0), cond(1.0), 1.0)(X, 2.0)
    _unet(model).calls.clear()
    guider = _guider(model, cond(1.0), cond(-1.0), 1.0)
    guider.keep_uncond()
    guided = guider(X, 2.0)
    assert [call["sample"].shape[0] for call in _unet(model).calls] == [4]  # the negative runs too
    torch.testing.assert_close(guider.last_uncond(), uncond_only)
    torch.testing.assert_close(guided, uncond_only + (guided - uncond_only) * 1.0)


def test_entries_average_by_strength_and_unequal_shapes_run_apart() -> None:
    model = fake_model()
    a = _guider(model, cond(1.0), [], 1.0)(X, 2.0)
    b = _guider(model, cond(3.0, tokens=154), [], 1.0)(X, 2.0)
    _unet(model).calls.clear()
    mixed = [*cond(1.0, strength=1.0), *cond(3.0, tokens=154, strength=3.0)]
    torch.testing.assert_close(_guider(model, mixed, [], 1.0)(X, 2.0), (a + 3 * b) / 4)
    assert len(_unet(model).calls) == 2


def test_timestep_ranges_switch_entries_on_and_off() -> None:
    model = fake_model()
    schedule = schedule_for(model.sampling)
    late = cond(1.0, start_percent=0.5, end_percent=1.0)
    guider = _guider(model, late, [], 1.0)
    assert torch.equal(guider(X, schedule.sigma_max), torch.zeros_like(X))  # nothing active: ComfyUI's zeros
    assert not torch.equal(guider(X, 0.5), torch.zeros_like(X))
    assert len(_unet(model).calls) == 1
    early = cond(2.0, start_percent=0.0, end_percent=0.5)
    switched = _guider(model, [*early, *late], [], 1.0)
    torch.testing.assert_close(switched(X, 0.5), guider(X, 0.5))


def test_sdxl_gets_pooled_output_and_size_time_ids() -> None:
    model = fake_model(ModelFamily.SDXL)
    pooled = torch.randn(1, 1280)
    positive = cond(1.0, pooled_output=pooled, width=1024, height=768, crop_w=8)
    _guider(model, positive, cond(0.0, pooled_output=pooled), 5.0)(X, 2.0)
    added = _unet(model).calls[0]["added"]
    assert added["text_embeds"].shape == (4, 1280)
    assert added["time_ids"].tolist()[:2] == [[768, 1024, 0, 8, 768, 1024]] * 2
    assert added["time_ids"].tolist()[2:] == [[24, 24, 0, 0, 24, 24]] * 2  # defaults: the latent size times 8


def test_sdxl_refiner_uses_aesthetic_scores() -> None:
    model = fake_model(ModelFamily.SDXL_REFINER)
    pooled = torch.randn(1, 1280)
    _guider(model, cond(1.0, pooled_output=pooled), cond(0.0, pooled_output=pooled), 5.0)(X, 2.0)
    time_ids = _unet(model).calls[0]["added"]["time_ids"].tolist()
    assert time_ids[0] == [24, 24, 0, 0, 6.0] and time_ids[2] == [24, 24, 0, 0, 2.5]


def test_sdxl_without_pooled_output_is_a_clear_error() -> None:
    with pytest.raises(NodeInputError, match="positive conditioning has no pooled_output, which SDXL models need"):
        _guider(fake_model(ModelFamily.SDXL), cond(1.0), [], 5.0)


def test_inpainting_model_gets_mask_and_masked_image_channels() -> None:
    model = fake_model(ModelFamily.SD1_INPAINT, in_channels=9)
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., :16] = 1.0
    image = torch.full((1, 4, 3, 3), 0.25)
    _guider(model, cond(1.0, concat_mask=mask, concat_latent_image=image), cond(0.0), 3.0)(X, 2.0)
    sample = _unet(model).calls[0]["sample"]
    assert sample.shape == (4, 9, 3, 3)
    assert sample[0, 4].tolist() == [[1.0, 1.0, 0.0]] * 3  # the pixel mask, resized to the latent and rounded
    assert torch.equal(sample[0, 5:], image[0])
    blank = torch.tensor(BLANK_INPAINT_LATENT).reshape(4, 1, 1).expand(4, 3, 3)
    assert torch.equal(sample[2, 4], torch.ones(3, 3)) and torch.equal(sample[2, 5:], blank)


def test_conditioning_shape_errors_name_the_problem() -> None:
    model = fake_model()
    with pytest.raises(NodeInputError, match="negative conditioning entry 0 is not a \\[tensor, dict\\] pair"):
        _guider(model, cond(1.0), [torch.zeros(1, 77, CONTEXT_DIM)], 5.0)
    with pytest.raises(NodeInputError, match="has embedding size 768 but this model expects 8"):
        _guider(model, [[torch.zeros(1, 77, 768), {}]], [], 5.0)
    with pytest.raises(NodeInputError, match="expected \\[batch, tokens, dim\\]"):
        _guider(model, [[torch.zeros(77, CONTEXT_DIM), {}]], [], 5.0)
