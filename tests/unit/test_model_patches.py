"""Model patches and SDXL conditioning: catalog entries equal to ComfyUI 0.3.64's, FreeU's filter and scales,
the output-block hooks on a real (tiny) diffusers UNet, RescaleCFG, DualCFGGuider, CLIPTextEncodeSDXL(Refiner)
and Canny.

``tests/data/comfyui_object_info/model_patches.json`` holds the real ComfyUI's ``/object_info`` entries of these
classes (DualCFGGuider's is in ``custom_sampling.json``).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import NodeInputError
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.freeu import FreeUPatch, fourier_filter
from comfyserve.models.handles import DiffusionModel, ModelFamily, SamplingSettings
from comfyserve.models.sampling.cfg import rescale_cfg
from comfyserve.models.sampling.conditioning import SamplingInputs, prepare_conds
from comfyserve.models.sampling.guidance import DualGuider, Guider
from comfyserve.models.sampling.schedule import schedule_for
from comfyserve.models.text import encode_text
from comfyserve.models.unet_patches import output_block_inputs, output_block_patches
from comfyserve.nodes import builtin_registry
from comfyserve.nodes.canny import Canny
from comfyserve.nodes.conditioning_sdxl import CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner
from comfyserve.nodes.custom_sampling import DualCFGGuider
from comfyserve.nodes.latent import EmptyLatentImage
from comfyserve.nodes.model_patches import FreeU, FreeU_V2, RescaleCFG
from comfyserve.nodes.sampling import KSampler
from tests.unit.fake_unet import FakeUNet, cond, fake_model
from tests.unit.models_fixtures import REFINER, SD1, SDXL, tiny_models  # noqa: F401
from tests.unit.test_nodes_utils import _comparable

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "comfyui_object_info" / "model_patches.json").read_text())
X = torch.linspace(-2, 2, 2 * 4 * 3 * 3).reshape(2, 4, 3, 3)


# -- catalog ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_catalog_entry_equals_the_real_comfyuis(name: str) -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()[name]
    assert _comparable(ours) == _comparable(REFERENCE[name])


def test_the_packaged_catalog_carries_the_new_classes() -> None:
    assert {*REFERENCE, "DualCFGGuider"} <= set(Catalog.packaged().specs)


# -- FreeU -----------------------------------------------------------------------------------------------------


def _reference_filter(x: np.ndarray, threshold: int, scale: float) -> np.ndarray:
    """The filter computed with numpy's FFT, in float64."""
    spectrum = np.fft.fftshift(np.fft.fft2(x, axes=(-2, -1)), axes=(-2, -1))
    row, column = x.shape[-2] // 2, x.shape[-1] // 2
    spectrum[..., row - threshold : row + threshold, column - threshold : column + threshold] *= scale
    return np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)), axes=(-2, -1)).real


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 5, 7)])
def test_fourier_filter_scales_the_centred_low_frequencies(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    filtered = fourier_filter(x, threshold=1, scale=0.3)
    assert filtered.dtype == x.dtype and filtered.shape == x.shape
    np.testing.assert_allclose(filtered.numpy(), _reference_filter(x.double().numpy(), 1, 0.3), atol=1e-5)
    constant = torch.full(shape, 2.0)  # only a DC component, which lies in the scaled square
    torch.testing.assert_close(fourier_filter(constant, 1, 0.5), constant * 0.5)
    torch.testing.assert_close(fourier_filter(x, 1, 1.0), x, atol=1e-5, rtol=0)


def test_fourier_filter_keeps_half_precision() -> None:
    x = torch.randn(1, 2, 4, 4).half()
    assert fourier_filter(x, 1, 0.2).dtype == torch.float16


def test_freeu_scales_by_channel_count() -> None:
    generator = torch.Generator().manual_seed(2)
    patch = FreeUPatch(model_channels=4, b1=1.5, b2=2.0, s1=0.5, s2=0.25)
    for channels, backbone, skip_scale in ((16, 1.5, 0.5), (8, 2.0, 0.25)):
        h, skip = torch.randn(2, channels, 4, 4, generator=generator), torch.randn(2, 6, 4, 4, generator=generator)
        out_h, out_skip = patch(h, skip)
        half = channels // 2
        torch.testing.assert_close(out_h[:, :half], h[:, :half] * backbone)
        assert torch.equal(out_h[:, half:], h[:, half:])
        torch.testing.assert_close(out_skip, fourier_filter(skip, 1, skip_scale))
    h, skip = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    assert patch(h, skip) == (h, skip)  # the base width (and any other) is left alone


def test_freeu_v2_scales_by_the_normalised_channel_mean() -> None:
    h = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(3))
    out, _ = FreeUPatch(model_channels=4, b1=1.5, b2=2.0, s1=1.0, s2=1.0, v2=True)(h, torch.randn(2, 4, 5, 5))
    mean = h.mean(1)
    for sample in range(2):
        flat = mean[sample].flatten()
        high, low = int(flat.argmax()), int(flat.argmin())
        factor = out[sample, :8].flatten(1) / h[sample, :8].flatten(1)
        torch.testing.assert_close(factor[:, high], torch.full((8,), 1.5))  # the largest mean gets b1
        torch.testing.assert_close(factor[:, low], torch.ones(8))  # the smallest is left as it is
        expected = 1 + 0.5 * (flat - flat.min()) / (flat.max() - flat.min())
        torch.testing.assert_close(factor, expected.expand(8, -1))
    assert torch.equal(out[:, 8:], h[:, 8:])


def _diffusers_unet() -> Any:
    """SD1.5's structure (four levels, channels x1 x2 x4 x4, two resnets per level) at a tiny width."""
    torch.manual_seed(0)
    unet: Any = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    return unet.eval()


def _unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """16x16: the deepest blocks 2x2 (1x1 would make FreeU_V2's min-max normalisation 0/0, as in ComfyUI)."""
    generator = torch.Generator().manual_seed(4)
    return (
        torch.randn(1, 4, 16, 16, generator=generator),
        torch.tensor([500.0]),
        torch.randn(1, 3, 8, generator=generator),
    )


def test_output_block_patches_see_comfyuis_output_blocks() -> None:
    """ComfyUI's 12 SD1.5 output blocks, ``h`` at 4x the base width for seven of them, 2x for three, 1x for two."""
    unet = _diffusers_unet()
    sample, timestep, context = _unet_inputs()
    with torch.no_grad():
        plain = unet(sample, timestep, encoder_hidden_states=context).sample
    seen: list[tuple[int, int]] = []

    def record(h: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((h.shape[1], skip.shape[1]))
        return h, skip

    with torch.no_grad(), output_block_patches(unet, [record]):
        patched = unet(sample, timestep, encoder_hidden_states=context).sample
    assert [h for h, _ in seen] == [32] * 7 + [16] * 3 + [8] * 2
    assert [h + s for h, s in seen] == [resnet.in_channels for resnet, _ in output_block_inputs(unet)]
    assert torch.equal(patched, plain)
    assert all(not resnet._forward_pre_hooks for resnet, _ in output_block_inputs(unet))  # removed afterwards


def test_output_block_patches_apply_in_order_and_only_in_their_context() -> None:
    unet = _diffusers_unet()
    sample, timestep, context = _unet_inputs()
    calls: list[str] = []

    def double(h: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append("double")
        return h * 2, skip

    def halve(h: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append("halve")
        return h / 2, skip

    def run() -> torch.Tensor:
        with torch.no_grad():
            out: torch.Tensor = unet(sample, timestep, encoder_hidden_states=context).sample
            return out

    plain = run()
    others: list[torch.Tensor] = []
    with output_block_patches(unet, [double, halve]):
        patched = run()
        thread = threading.Thread(target=lambda: others.append(run()))  # another job sharing the cached UNet
        thread.start()
        thread.join()
    assert calls == ["double", "halve"] * 12
    torch.testing.assert_close(patched, plain)
    assert torch.equal(others[0], plain)


def test_freeu_with_unit_factors_changes_nothing_and_defaults_change_the_output() -> None:
    unet = _diffusers_unet()
    sample, timestep, context = _unet_inputs()
    outputs = []
    for patch in (FreeUPatch(8, 1.0, 1.0, 1.0, 1.0), FreeUPatch(8, 1.3, 1.4, 0.9, 0.2, v2=True)):
        with torch.no_grad(), output_block_patches(unet, [patch]):
            outputs.append(unet(sample, timestep, encoder_hidden_states=context).sample)
    with torch.no_grad():
        plain = unet(sample, timestep, encoder_hidden_states=context).sample
    torch.testing.assert_close(outputs[0], plain, atol=1e-5, rtol=0)
    assert outputs[1].isfinite().all() and float((outputs[1] - plain).abs().max()) > 1e-3


def _model(unet: Any) -> DiffusionModel:
    return DiffusionModel(unet, ModelFamily.SD1, SamplingSettings())


def test_freeu_nodes_patch_a_clone() -> None:
    model = _model(_diffusers_unet())
    (once,) = FreeU().patch(model, 1.1, 1.2, 0.9, 0.2)
    (twice,) = FreeU_V2().patch(once, 1.3, 1.4, 0.9, 0.2)
    assert model.output_block_patches == () and once.unet is model.unet
    assert once.output_block_patches == (FreeUPatch(8, 1.1, 1.2, 0.9, 0.2),)
    assert twice.output_block_patches == (FreeUPatch(8, 1.1, 1.2, 0.9, 0.2), FreeUPatch(8, 1.3, 1.4, 0.9, 0.2, True))
    with pytest.raises(NodeInputError, match="model must be a MODEL"):
        FreeU().patch(None, 1.1, 1.2, 0.9, 0.2)  # type: ignore[arg-type]


def test_ksampler_with_freeu_leaves_the_shared_model_as_it_was() -> None:
    model = _model(_diffusers_unet())
    (latent,) = EmptyLatentImage().generate(128, 128, 1)
    positive = [[torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(5)), {}]]
    negative = [[torch.zeros(1, 3, 8), {}]]

    def sample(m: DiffusionModel) -> torch.Tensor:
        (out,) = KSampler().sample(m, 3, 2, 5.0, "euler", "normal", positive, negative, latent)
        samples: torch.Tensor = out["samples"]
        return samples

    before = sample(model)
    (patched,) = FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)
    after = sample(patched)
    assert after.isfinite().all() and not torch.equal(after, before)
    assert torch.equal(sample(model), before)


# -- RescaleCFG ------------------------------------------------------------------------------------------------


def _v(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """v-prediction of a denoised estimate: ``(x / (s² + 1) - denoised) * sqrt(s² + 1) / s``... over ``s²+1``."""
    return (x / (sigma**2 + 1) - denoised) * math.sqrt(sigma**2 + 1) / sigma


def test_rescale_cfg_rescales_the_v_prediction_to_the_conds_deviation() -> None:
    generator = torch.Generator().manual_seed(6)
    x, cond_pred, uncond_pred = (torch.randn(2, 4, 5, 5, generator=generator) for _ in range(3))
    sigma, scale = 3.0, 7.0
    plain = uncond_pred + (cond_pred - uncond_pred) * scale
    guided = x - rescale_cfg(0.0, x, sigma, cond_pred, uncond_pred, scale)
    torch.testing.assert_close(_v(x, guided, sigma), _v(x, plain, sigma), atol=1e-5, rtol=1e-5)
    rescaled = x - rescale_cfg(1.0, x, sigma, cond_pred, uncond_pred, scale)
    dims = (1, 2, 3)
    torch.testing.assert_close(_v(x, rescaled, sigma).std(dims), _v(x, cond_pred, sigma).std(dims))
    half = x - rescale_cfg(0.5, x, sigma, cond_pred, uncond_pred, scale)
    torch.testing.assert_close(_v(x, half, sigma), (_v(x, rescaled, sigma) + _v(x, plain, sigma)) / 2)


def _prepared(model: DiffusionModel, conditioning: list[Any], side: str) -> list[Any]:
    schedule = schedule_for(model.sampling)
    inputs = SamplingInputs(latent=torch.zeros_like(X), denoise_mask=None, device=X.device, dtype=torch.float32)
    return prepare_conds(model, schedule, conditioning, side, inputs)


def _guider(model: DiffusionModel, positive: list[Any], negative: list[Any], cfg: float) -> Guider:
    schedule = schedule_for(model.sampling)
    return Guider(model, schedule, _prepared(model, positive, "positive"), _prepared(model, negative, "negative"), cfg)


def _fake_unet(model: DiffusionModel) -> FakeUNet:
    assert isinstance(model.unet, FakeUNet)
    return model.unet


def test_a_patched_cfg_function_replaces_cfg_and_sees_zeros_for_a_skipped_negative() -> None:
    seen: list[tuple[float, torch.Tensor, torch.Tensor, float]] = []

    def function(x: torch.Tensor, sigma: float, c: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
        seen.append((sigma, c, u, scale))
        return x * 0.25

    plain = fake_model()
    cond_only = _guider(plain, cond(1.0), [], 1.0)(X, 2.0)
    uncond_only = _guider(plain, cond(-1.0), [], 1.0)(X, 2.0)
    (model,) = RescaleCFG().patch(fake_model(), 0.7)
    model = model.clone(cfg_function=function)
    torch.testing.assert_close(_guider(model, cond(1.0), cond(-1.0), 4.0)(X, 2.0), X * 0.75)
    torch.testing.assert_close(seen[-1][1], cond_only)
    torch.testing.assert_close(seen[-1][2], uncond_only)
    assert (seen[-1][0], seen[-1][3]) == (2.0, 4.0)
    _fake_unet(model).calls.clear()
    _guider(model, cond(1.0), cond(-1.0), 1.0)(X, 2.0)
    assert torch.equal(seen[-1][2], torch.zeros_like(X))  # ComfyUI's cfg-1 shortcut: no negative, zeros
    assert [call["sample"].shape[0] for call in _fake_unet(model).calls] == [2]


def test_rescale_cfg_node_patches_a_clone() -> None:
    model = fake_model()
    (patched,) = RescaleCFG().patch(model, 0.7)
    assert model.cfg_function is None and patched.cfg_function is not None
    x, c, u = X, X * 0.5, X * -0.25
    torch.testing.assert_close(patched.cfg_function(x, 2.0, c, u, 3.0), rescale_cfg(0.7, x, 2.0, c, u, 3.0))


# -- DualCFGGuider ---------------------------------------------------------------------------------------------


def _dual(model: DiffusionModel, cfg1: float, cfg2: float, nested: bool) -> DualGuider:
    (guidance,) = DualCFGGuider().get_guider(
        model, cond(1.0), cond(0.5), cond(-1.0), cfg1, cfg2, "nested" if nested else "regular"
    )
    schedule = schedule_for(model.sampling)
    guider = guidance.guider(schedule, lambda conditioning, side: _prepared(model, conditioning, side))
    assert isinstance(guider, DualGuider)
    return guider


def _single(model: DiffusionModel, value: float) -> torch.Tensor:
    return _guider(model, cond(value), [], 1.0)(X, 2.0)


@pytest.mark.parametrize("nested", [False, True])
def test_dual_cfg_combines_three_predictions(nested: bool) -> None:
    model = fake_model()
    positive, middle, negative = _single(model, 1.0), _single(model, 0.5), _single(model, -1.0)
    _fake_unet(model).calls.clear()
    out = _dual(model, 5.0, 3.0, nested)(X, 2.0)
    if nested:
        expected = negative + 3.0 * ((middle + (positive - middle) * 5.0) - negative)
    else:
        expected = (negative + (middle - negative) * 3.0) + (positive - middle) * 5.0
    torch.testing.assert_close(out, expected)
    assert [call["sample"].shape[0] for call in _fake_unet(model).calls] == [6]  # one batch for all three


@pytest.mark.parametrize(("cfg1", "cfg2", "batch"), [(5.0, 1.0, 4), (1.0, 1.0, 2), (1.0, 3.0, 6)])
def test_dual_cfg_regular_skips_what_a_cfg_of_one_makes_unneeded(cfg1: float, cfg2: float, batch: int) -> None:
    model = fake_model()
    positive, middle = _single(model, 1.0), _single(model, 0.5)
    _fake_unet(model).calls.clear()
    out = _dual(model, cfg1, cfg2, nested=False)(X, 2.0)
    assert [call["sample"].shape[0] for call in _fake_unet(model).calls] == [batch]
    if cfg2 == 1.0:  # the negative is taken as zeros: (0 + (middle - 0) * 1) + (positive - middle) * cfg1
        torch.testing.assert_close(out, middle + (positive - middle) * cfg1)


def test_dual_cfg_keeps_the_uncond_for_cfg_pp_samplers() -> None:
    model = fake_model()
    negative, middle = _single(model, -1.0), _single(model, 0.5)
    regular = _dual(model, 1.0, 1.0, nested=False)
    regular.keep_uncond()
    regular(X, 2.0)
    torch.testing.assert_close(regular.last_uncond(), negative)
    nested = _dual(model, 2.0, 2.0, nested=True)
    nested(X, 2.0)
    torch.testing.assert_close(nested.last_uncond(), middle)


def test_dual_cfg_cond2_is_a_negative_prompt_for_the_refiners_aesthetic_score() -> None:
    model = fake_model(ModelFamily.SDXL_REFINER)
    pooled = torch.zeros(1, 1280)
    (guidance,) = DualCFGGuider().get_guider(
        model,
        cond(1.0, pooled_output=pooled),
        cond(0.5, pooled_output=pooled),
        cond(-1.0, pooled_output=pooled, aesthetic_score=4.0),
        2.0,
        2.0,
        "regular",
    )
    guider = guidance.guider(schedule_for(model.sampling), lambda c, side: _prepared(model, c, side))
    guider(X, 2.0)
    time_ids = _fake_unet(model).calls[0]["added"]["time_ids"][:, -1].tolist()
    assert sorted(set(time_ids)) == [2.5, 4.0, 6.0]
    with pytest.raises(NodeInputError, match="style must be"):
        DualCFGGuider().get_guider(model, cond(1.0), cond(0.5), cond(-1.0), 2.0, 2.0, "sideways")


# -- SDXL text encoders ----------------------------------------------------------------------------------------


def test_clip_text_encode_sdxl_pads_the_shorter_encoder_with_empty_windows(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SDXL)
    long_text = "fox " * 100  # 100 tokens: two windows
    sizes = {"width": 1024, "height": 768, "crop_w": 16, "crop_h": 8, "target_width": 512, "target_height": 640}
    ((cond_tensor, extras),) = CLIPTextEncodeSDXL().execute(clip, **sizes, text_g=long_text, text_l="a fox")[0]
    width_l = int(clip.encoders[0].module.config.hidden_size)
    ((from_g, extras_g),) = encode_text(clip, long_text)
    ((from_l, _),) = encode_text(clip, "a fox")
    ((empty, _),) = encode_text(clip, "")
    assert cond_tensor.shape == (1, 154, from_g.shape[-1])
    torch.testing.assert_close(cond_tensor[..., width_l:], from_g[..., width_l:])
    torch.testing.assert_close(cond_tensor[:, :77, :width_l], from_l[..., :width_l], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cond_tensor[:, 77:, :width_l], empty[..., :width_l], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extras["pooled_output"], extras_g["pooled_output"])
    assert {k: v for k, v in extras.items() if k != "pooled_output"} == sizes

    ((swapped, _),) = CLIPTextEncodeSDXL().execute(clip, **sizes, text_g="a fox", text_l=long_text)[0]
    ((short_g, _),) = encode_text(clip, "a fox")
    assert swapped.shape[1] == 154
    torch.testing.assert_close(swapped[:, 77:, width_l:], empty[..., width_l:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[:, :77, width_l:], short_g[..., width_l:], atol=1e-5, rtol=1e-5)


def test_clip_text_encode_sdxl_refuses_other_clips(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / SD1)
    with pytest.raises(NodeInputError, match="SDXL base checkpoint"):
        CLIPTextEncodeSDXL().execute(clip, 1024, 1024, 0, 0, 1024, 1024, "a", "b")
    with pytest.raises(NodeInputError, match="clip input is invalid"):
        CLIPTextEncodeSDXL().execute(None, 1024, 1024, 0, 0, 1024, 1024, "a", "b")  # type: ignore[arg-type]


def test_clip_text_encode_sdxl_refiner_adds_the_aesthetic_score(tiny_models: Path) -> None:  # noqa: F811
    _, clip, _ = load_checkpoint(tiny_models / REFINER)
    ((cond_tensor, extras),) = CLIPTextEncodeSDXLRefiner().execute(clip, 3.5, 768, 512, "a fox")[0]
    ((expected, expected_extras),) = encode_text(clip, "a fox")
    assert torch.equal(cond_tensor, expected)
    assert torch.equal(extras["pooled_output"], expected_extras["pooled_output"])
    assert {k: v for k, v in extras.items() if k != "pooled_output"} == {
        "aesthetic_score": 3.5,
        "width": 768,
        "height": 512,
    }
    model = fake_model(ModelFamily.SDXL_REFINER)
    prepared = _prepared(model, [[torch.zeros(1, 77, 8), extras]], "negative")
    assert prepared[0].added is not None
    assert prepared[0].added["time_ids"][0].tolist() == [512, 768, 0, 0, 3.5]


# -- Canny -----------------------------------------------------------------------------------------------------


def test_canny_finds_a_squares_outline_as_an_rgb_image() -> None:
    image = torch.zeros(2, 24, 20, 3)
    image[0, 6:18, 5:15] = 1.0
    image[1] = 0.5
    (edges,) = Canny().execute(image, 0.4, 0.8)
    assert edges.shape == (2, 24, 20, 3) and edges.dtype == torch.float32 and edges.device.type == "cpu"
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(edges[..., 0], edges[..., 1]) and torch.equal(edges[..., 0], edges[..., 2])
    found = edges[0, ..., 0].nonzero()
    assert len(found) > 0 and not edges[1].any()  # a flat image has no edges
    rows, columns = found[:, 0], found[:, 1]
    assert rows.min() >= 4 and rows.max() <= 19 and columns.min() >= 3 and columns.max() <= 16
    assert not edges[0, 9:15, 8:12].any()  # the inside of the square is not an edge


def test_canny_refuses_a_low_threshold_above_the_high_one() -> None:
    with pytest.raises(NodeInputError, match=r"low_threshold \(0.8\) must not be greater than high_threshold"):
        Canny().execute(torch.zeros(1, 8, 8, 3), 0.8, 0.4)
    with pytest.raises(NodeInputError, match="image must be an IMAGE"):
        Canny().execute(torch.zeros(8, 8, 3), 0.4, 0.8)
