"""KSampler, KSamplerAdvanced, ModelSamplingDiscrete and the latent nodes, end to end on a fake UNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.engine import context
from comfyserve.engine.errors import InterruptedError_, NodeInputError
from comfyserve.models.handles import Autoencoder, DiffusionModel
from comfyserve.models.sampling.samplers import SAMPLER_NAMES
from comfyserve.models.sampling.schedulers import SCHEDULER_NAMES
from comfyserve.nodes.latent import (
    EmptyLatentImage,
    InpaintModelConditioning,
    LatentUpscale,
    LatentUpscaleBy,
    SetLatentNoiseMask,
)
from comfyserve.nodes.sampling import KSampler, KSamplerAdvanced, ModelSamplingDiscrete
from tests.unit.fake_unet import FakeUNet, cond, fake_model

POSITIVE, NEGATIVE = cond(1.0), cond(-1.0)


def _latent(batch: int = 1, size: int = 64) -> dict[str, Any]:
    return EmptyLatentImage().generate(size, size, batch)[0]


def _sample(model: DiffusionModel, latent: dict[str, Any], **options: Any) -> torch.Tensor:
    args: dict[str, Any] = {
        "seed": 5,
        "steps": 6,
        "cfg": 7.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "positive": POSITIVE,
        "negative": NEGATIVE,
    }
    args.update(options)
    return KSampler().sample(model, latent_image=latent, **args)[0]["samples"]


def _advanced(model: DiffusionModel, latent: dict[str, Any], **options: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "add_noise": "enable",
        "noise_seed": 5,
        "steps": 6,
        "cfg": 7.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "positive": POSITIVE,
        "negative": NEGATIVE,
        "start_at_step": 0,
        "end_at_step": 10000,
        "return_with_leftover_noise": "disable",
    }
    args.update(options)
    return KSamplerAdvanced().sample(model, latent_image=latent, **args)[0]


def _calls(model: DiffusionModel) -> list[dict[str, Any]]:
    assert isinstance(model.unet, FakeUNet)
    return model.unet.calls


def test_ksampler_inputs_are_comfyui_s() -> None:
    required = KSampler.INPUT_TYPES()["required"]
    assert list(required) == [
        "model",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "latent_image",
        "denoise",
    ]
    assert required["seed"][1]["max"] == 2**64 - 1
    assert required["steps"][1] | {"tooltip": ""} == {"default": 20, "min": 1, "max": 10000, "tooltip": ""}
    assert required["cfg"][1]["default"] == 8.0 and required["cfg"][1]["round"] == 0.01
    assert required["sampler_name"][0] == list(SAMPLER_NAMES)
    assert required["scheduler"][0] == list(SCHEDULER_NAMES)
    advanced = KSamplerAdvanced.INPUT_TYPES()["required"]
    assert list(advanced)[:3] == ["model", "add_noise", "noise_seed"]
    assert list(advanced)[-3:] == ["start_at_step", "end_at_step", "return_with_leftover_noise"]
    assert advanced["end_at_step"][1]["default"] == 10000


def test_every_sampler_and_scheduler_runs_through_the_node() -> None:
    model = fake_model()
    latent = _latent(2, 16)
    for sampler in SAMPLER_NAMES:
        out = _sample(model, latent, sampler_name=sampler, steps=3)
        assert out.shape == (2, 4, 2, 2) and bool(torch.isfinite(out).all()), sampler
    for scheduler in SCHEDULER_NAMES:
        assert bool(torch.isfinite(_sample(model, latent, scheduler=scheduler, steps=3)).all()), scheduler


def test_same_seed_same_image_other_seed_other_image() -> None:
    model = fake_model()
    for sampler in ("euler", "euler_ancestral", "dpmpp_2m_sde"):
        first = _sample(model, _latent(2), sampler_name=sampler)
        assert first.shape == (2, 4, 8, 8) and first.dtype == torch.float32
        assert torch.equal(first, _sample(model, _latent(2), sampler_name=sampler))
        assert not torch.allclose(first, _sample(model, _latent(2), sampler_name=sampler, seed=6))
        assert not torch.allclose(first[0], first[1])


def test_cfg_one_makes_one_model_call_per_step() -> None:
    model = fake_model()
    _sample(model, _latent(3), cfg=1.0)
    assert [call["sample"].shape[0] for call in _calls(model)] == [3] * 6
    _calls(model).clear()
    _sample(model, _latent(3), cfg=7.0)
    assert [call["sample"].shape[0] for call in _calls(model)] == [6] * 6


def test_denoise_runs_the_requested_steps_on_the_input() -> None:
    model = fake_model()
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    out = _sample(model, start, denoise=0.5)
    assert len(_calls(model)) == 6
    assert _calls(model)[0]["timestep"][0] < 600  # started half-way down the schedule
    assert not torch.allclose(out, start["samples"])
    untouched = KSampler().sample(model, 5, 6, 7.0, "euler", "normal", POSITIVE, NEGATIVE, start, denoise=0.0)[0]
    assert untouched["samples"] is start["samples"]


def test_split_advanced_runs_equal_one_full_run() -> None:
    model = fake_model()
    full = _advanced(model, _latent())["samples"]
    first = _advanced(model, _latent(), end_at_step=2, return_with_leftover_noise="enable")
    assert len(_calls(model)) == 6 + 2
    second = _advanced(model, first, add_noise="disable", start_at_step=2)
    assert len(_calls(model)) == 6 + 6
    torch.testing.assert_close(second["samples"], full, rtol=1e-5, atol=1e-5)
    assert torch.equal(_advanced(model, first, start_at_step=6)["samples"], first["samples"])


def test_noise_mask_keeps_the_unmasked_region() -> None:
    model = fake_model()
    original = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0
    latent = SetLatentNoiseMask().set_mask({"samples": original}, mask)[0]
    assert latent["noise_mask"].shape == (1, 1, 64, 64)
    # UniPC stops at sigma 1e-3 rather than 0 (as ComfyUI's does), so its kept region carries that much noise.
    for sampler, tolerance in (("euler", 1e-5), ("ddim", 1e-5), ("dpmpp_2m", 1e-5), ("uni_pc", 5e-3)):
        out = _sample(model, latent, sampler_name=sampler)
        torch.testing.assert_close(out[..., 4:], original[..., 4:], rtol=0, atol=tolerance)
        assert not torch.allclose(out[..., :4], original[..., :4])


def test_batch_index_selects_the_seed_stream_items() -> None:
    model = fake_model()
    whole = _sample(model, _latent(3), cfg=1.0)
    piece = _sample(model, {**_latent(1), "batch_index": [2]}, cfg=1.0)
    torch.testing.assert_close(piece[0], whole[2])


def test_progress_is_reported_per_step_and_cancellation_stops(tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    run = context.RunContext(tmp_path, tmp_path, tmp_path, progress_hook=lambda v, t: reports.append((v, t)))
    with context.use(run):
        _sample(fake_model(), _latent(), steps=4)
    assert reports == [(1, 4), (2, 4), (3, 4), (4, 4)]
    model = fake_model()
    cancelled = context.RunContext(tmp_path, tmp_path, tmp_path, cancel_check=lambda: len(_calls(model)) >= 2)
    with context.use(cancelled), pytest.raises(InterruptedError_):
        _sample(model, _latent(), steps=10)
    assert len(_calls(model)) == 2


def test_runs_in_the_unet_dtype_and_returns_float32() -> None:
    model = fake_model(dtype=torch.float64)
    out = _sample(model, _latent())
    assert _calls(model)[0]["sample"].dtype == torch.float64
    assert _calls(model)[0]["context"].dtype == torch.float64
    assert out.dtype == torch.float32


def test_bad_latents_are_clear_errors() -> None:
    model = fake_model()
    with pytest.raises(NodeInputError, match="latent_image has 3 channels but this model works on 4-channel latents"):
        _sample(model, {"samples": torch.zeros(1, 3, 8, 8)})
    with pytest.raises(NodeInputError, match=r"shape \[batch, channels, height, width\], got \[4, 8, 8\]"):
        _sample(model, {"samples": torch.zeros(4, 8, 8)})
    with pytest.raises(NodeInputError, match="got None"):
        _sample(model, {"latent": torch.zeros(1, 4, 8, 8)})
    assert EmptyLatentImage().generate(519, 512, 1)[0]["samples"].shape == (1, 4, 64, 64)  # rounds down


def test_a_cfg_pp_sampler_runs_through_ksampler_and_evaluates_the_negative_at_cfg_one() -> None:
    model = fake_model()
    plain = _sample(model, _latent(), sampler_name="euler", cfg=1.0, steps=3)
    rows_plain = [call["sample"].shape[0] for call in _calls(model)]
    _calls(model).clear()
    cfg_pp = _sample(model, _latent(), sampler_name="euler_cfg_pp", cfg=1.0, steps=3)
    assert cfg_pp.shape == plain.shape and torch.isfinite(cfg_pp).all()
    assert [call["sample"].shape[0] for call in _calls(model)] == [2 * rows for rows in rows_plain]


def test_model_sampling_discrete_returns_a_changed_clone() -> None:
    assert ModelSamplingDiscrete.INPUT_TYPES()["required"]["sampling"][0] == [
        "eps",
        "v_prediction",
        "lcm",
        "x0",
        "img_to_img",
    ]
    model = fake_model()
    (patched,) = ModelSamplingDiscrete().patch(model, "v_prediction", True)
    assert patched.sampling.prediction == "v_prediction" and patched.sampling.zsnr
    assert model.sampling.prediction == "eps" and not model.sampling.zsnr
    assert patched.unet is model.unet
    assert not torch.allclose(_sample(patched, _latent()), _sample(model, _latent()))
    (lcm,) = ModelSamplingDiscrete().patch(model, "lcm", False)
    _calls(model).clear()
    _sample(lcm, _latent(), sampler_name="lcm", scheduler="sgm_uniform", steps=4, cfg=1.0)
    # ComfyUI 0.3.64 gives these for LCM + sgm_uniform, 4 steps. Its third step, timestep 509, lands exactly
    # halfway in log sigma between the entries 499 and 519, so the float32 rounding of the CPU's vectorised log
    # picks the entry: ComfyUI itself gives 519 on one x86_64 machine and 499 on another (AMD EPYC, same torch).
    timesteps = [float(call["timestep"][0]) for call in _calls(model)]
    assert timesteps[:2] == [999.0, 759.0] and timesteps[2] in (499.0, 519.0) and timesteps[3] == 259.0


def test_empty_latent_and_upscales() -> None:
    latent = EmptyLatentImage().generate(64, 48, 3)[0]
    assert latent["samples"].shape == (3, 4, 6, 8) and not latent["samples"].any()
    values = {"samples": torch.randn(1, 4, 6, 8), "batch_index": [4]}
    (wide,) = LatentUpscale().upscale(values, "bilinear", 128, 0, "disabled")
    assert wide["samples"].shape == (1, 4, 12, 16) and wide["batch_index"] == [4]
    (cropped,) = LatentUpscale().upscale(values, "nearest-exact", 64, 64, "center")
    assert cropped["samples"].shape == (1, 4, 8, 8)
    assert LatentUpscale().upscale(values, "area", 0, 0, "disabled")[0] is values
    (by,) = LatentUpscaleBy().upscale(values, "bicubic", 1.5)
    assert by["samples"].shape == (1, 4, 9, 12)


def test_bislerp_keeps_constant_fields_and_vector_norms() -> None:
    constant = torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 4, 1, 1).expand(2, 4, 5, 7)
    (out,) = LatentUpscale().upscale({"samples": constant}, "bislerp", 96, 80, "disabled")
    torch.testing.assert_close(out["samples"], constant[:, :, :1, :1].expand(2, 4, 10, 12))
    unit = torch.nn.functional.normalize(torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(2)), dim=1)
    (grown,) = LatentUpscaleBy().upscale({"samples": unit}, "bislerp", 2.0)
    norms = grown["samples"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_vae() -> Autoencoder:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    module = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )
    return Autoencoder(module, scaling_factor=0.18215)


def test_inpaint_model_conditioning_encodes_the_masked_image(tiny_vae: Autoencoder) -> None:
    from comfyserve.models.vae import encode_pixels

    pixels = torch.rand(1, 36, 44, 3, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, 36, 44)
    mask[:, 10:30, 6:20] = 1.0
    positive = cond(1.0, strength=0.5)
    negative = cond(0.0)
    out_positive, out_negative, latent = InpaintModelConditioning().encode(positive, negative, tiny_vae, pixels, mask)

    cropped = pixels[:, 2:34, 2:42]
    torch.testing.assert_close(latent["samples"], encode_pixels(tiny_vae, cropped))
    assert latent["samples"].shape == (1, 4, 4, 5)
    assert torch.equal(latent["noise_mask"], mask[:, None, 2:34, 2:42])
    grey = cropped.clone()
    grey[:, 8:28, 4:18] = 0.5
    extras = out_positive[0][1]
    torch.testing.assert_close(extras["concat_latent_image"], encode_pixels(tiny_vae, grey))
    assert torch.equal(extras["concat_mask"], latent["noise_mask"])
    assert extras["strength"] == 0.5 and positive[0][1] == {"strength": 0.5}
    assert out_negative[0][1]["concat_latent_image"] is extras["concat_latent_image"]
    without_mask = InpaintModelConditioning().encode(positive, negative, tiny_vae, pixels, mask, noise_mask=False)[2]
    assert "noise_mask" not in without_mask
