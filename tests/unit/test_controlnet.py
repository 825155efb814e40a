"""The ControlNet nodes: catalog entries equal to ComfyUI 0.3.64's, both file layouts loaded, and the residuals'
semantics in sampling (strength, start/end percent, chaining, pooling, hint resizing and batching, the hand-over
of ControlNetApply's ControlNets to the negative side).

``tests/data/comfyui_object_info/controlnet.json`` holds the real ComfyUI's ``/object_info`` entries of the apply
nodes; the loaders, whose file list carries the built-in engine's model-folder marker, are compared with the UI
oracle's entries with that marker left out.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.node_api import MODEL_FOLDER
from comfyserve.models import layout
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.controlnet import (
    _diffusers_weights,
    build_controlnet,
    controlnet_config,
    load_controlnet,
    with_base,
)
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import read_state_dict
from comfyserve.models.handles import ControlNet, DiffusionModel, ModelFamily
from comfyserve.models.lora import apply_lora, load_lora_file, merged
from comfyserve.models.sampling.conditioning import SamplingInputs, prepare_conds
from comfyserve.models.sampling.control import fill_uncond_controls
from comfyserve.models.sampling.schedule import schedule_for
from comfyserve.models.testcontrolnet import controlnet_shapes, ldm_controlnet_shapes
from comfyserve.models.testmodels import make_test_models, save, tiny_controlnet
from comfyserve.nodes import builtin_registry
from comfyserve.nodes import controlnet as cn
from comfyserve.nodes.conditioning import CLIPTextEncode
from comfyserve.nodes.latent import EmptyLatentImage
from comfyserve.nodes.sampling import KSampler
from tests.unit.models_fixtures import COMPAT, SD1, SDXL, tiny_models  # noqa: F401

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = json.loads((DATA / "comfyui_object_info" / "controlnet.json").read_text())
SD1_CN = "controlnet/tiny-sd15-controlnet.safetensors"
SDXL_CN = "controlnet/tiny-sdxl-controlnet.safetensors"


def _entry(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("python_module", "comfyserve")}


def _without_folder_marker(info: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(_entry(info)))
    for inputs in out["input"].values():
        for name, spec in inputs.items():
            if len(spec) == 2 and isinstance(spec[1], dict) and MODEL_FOLDER in spec[1]:
                options = {k: v for k, v in spec[1].items() if k != MODEL_FOLDER}
                inputs[name] = [spec[0], options] if options else [spec[0]]
    return out


def test_every_class_of_the_pack_has_comfyui_s_catalog_entry() -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()
    oracle = json.loads(gzip.decompress((DATA / "ui_oracle" / "object_info.json.gz").read_bytes()))
    assert sorted(cn.NODE_CLASS_MAPPINGS) == sorted([*REFERENCE, "ControlNetLoader", "DiffControlNetLoader"])
    for name, reference in REFERENCE.items():
        assert _entry(ours[name]) == _entry(reference), name
    for name in ("ControlNetLoader", "DiffControlNetLoader"):
        assert ours[name]["input"]["required"]["control_net_name"][1][MODEL_FOLDER] == "controlnet"
        assert _without_folder_marker(ours[name]) == _entry(oracle[name]), name


# --- loading ----------------------------------------------------------------------------------------------------


def test_the_ldm_layout_converts_onto_the_unet_s_own_names(tiny_models: Path) -> None:  # noqa: F811
    """An LDM ControlNet whose encoder is the checkpoint's UNet encoder loads with exactly the UNet's weights under
    the same diffusers names (the checkpoint converter and the ControlNet converter agree)."""
    checkpoint = read_state_dict(tiny_models / SD1)
    sd = tiny_controlnet(ModelFamily.SD1)
    for key in sd:
        unet_key = layout.UNET_PREFIX + key.removeprefix("control_model.")
        if unet_key in checkpoint:
            sd[key] = checkpoint[unet_key]
    net = build_controlnet(dict(sd), "copy.safetensors")
    model, _, _ = load_checkpoint(tiny_models / SD1)
    unet = model.unet.state_dict()
    shared = {k: v for k, v in net.model.state_dict().items() if k in unet}
    assert len(shared) > 100
    assert all(torch.equal(v, unet[k]) for k, v in shared.items())
    # the bare layout (no control_model. prefix) is the same ControlNet
    bare = build_controlnet({k.removeprefix("control_model."): v for k, v in sd.items()}, "bare.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.model.parameters(), bare.model.parameters(), strict=True))


def test_the_diffusers_layout_loads_as_stored(tiny_models: Path) -> None:  # noqa: F811
    net = load_controlnet(tiny_models / SDXL_CN)
    model, _, _ = load_checkpoint(tiny_models / SDXL)
    assert net.model.config.block_out_channels == model.unet.config.block_out_channels
    assert net.model.config.addition_embed_type == "text_time"
    stored = build_controlnet(dict(net.model.state_dict()), "again.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.model.parameters(), stored.model.parameters(), strict=True))
    assert load_controlnet(tiny_models / SDXL_CN) is net  # cached like checkpoints


@pytest.mark.parametrize(
    ("family", "published"),
    [
        # lllyasviel/sd-controlnet-canny and diffusers/controlnet-canny-sdxl-1.0 (their config.json)
        (ModelFamily.SD1, {"attention_head_dim": 8, "cross_attention_dim": 768, "use_linear_projection": False}),
        (
            ModelFamily.SDXL,
            {
                "attention_head_dim": [5, 10, 20],
                "cross_attention_dim": 2048,
                "use_linear_projection": True,
                "transformer_layers_per_block": [1, 2, 10],
                "addition_embed_type": "text_time",
                "projection_class_embeddings_input_dim": 2816,
            },
        ),
    ],
)
def test_full_size_layouts_give_the_published_configs(family: ModelFamily, published: dict[str, Any]) -> None:
    """The published widths' key layout (on the meta device) converts to exactly the parameters of a
    ControlNetModel built from the config read off it, and that config has the published values."""
    from diffusers import ControlNetModel

    shapes = controlnet_shapes(family, layout.FULL_SIZE[family].unet)
    weights, _ = _diffusers_weights({k: torch.empty(v, device="meta") for k, v in shapes.items()}, "full")
    config = controlnet_config(weights)
    assert {k: config[k] for k in published} == published
    assert config["conditioning_embedding_out_channels"] == [16, 32, 96, 256]
    assert config["norm_num_groups"] == 32
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in weights.items()}


def test_an_sdxl_controlnet_in_the_ldm_layout_loads_its_size_embedding() -> None:
    shapes = ldm_controlnet_shapes(layout.TINY[ModelFamily.SDXL].unet)
    generator = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v, generator=generator) for k, v in shapes.items()}
    net = build_controlnet(dict(sd), "xl-ldm.safetensors")
    assert net.model.config.addition_embed_type == "text_time"
    loaded = net.model.state_dict()
    assert torch.equal(loaded["add_embedding.linear_1.weight"], sd["control_model.label_emb.0.0.weight"])
    assert torch.equal(loaded["controlnet_down_blocks.3.bias"], sd["control_model.zero_convs.3.0.bias"])


def test_files_that_are_no_controlnet_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not contain a valid controlnet model"):
        build_controlnet({"foo.weight": torch.zeros(2)}, "x.safetensors")
    with pytest.raises(ModelFileError, match="is a Control-LoRA"):
        build_controlnet({"lora_controlnet": torch.zeros(1)}, "x.safetensors")
    broken = tiny_controlnet(ModelFamily.SD1)
    del broken["control_model.input_blocks.1.0.emb_layers.1.weight"]
    with pytest.raises(ModelFileError, match=r"do not fit the expected layout \(1 missing"):
        build_controlnet(broken, "broken.safetensors")
    del broken["control_model.input_blocks.1.0.in_layers.2.weight"]
    with pytest.raises(ModelFileError, match="is not a ControlNet of a known layout"):
        build_controlnet(broken, "broken.safetensors")


def test_shuffle_controlnets_pool_their_residuals(tmp_path: Path) -> None:
    save(tiny_controlnet(ModelFamily.SD1), tmp_path / "control_v11e_sd15_shuffle.safetensors")
    save(tiny_controlnet(ModelFamily.SD1), tmp_path / "control_v11p_sd15_canny.safetensors")
    assert load_controlnet(tmp_path / "control_v11e_sd15_shuffle.safetensors").global_average_pooling
    assert not load_controlnet(tmp_path / "control_v11p_sd15_canny.safetensors").global_average_pooling


def test_a_difference_controlnet_gets_the_base_model_added(tiny_models: Path) -> None:  # noqa: F811
    sd = tiny_controlnet(ModelFamily.SD1)
    sd["difference"] = torch.tensor([])
    net = build_controlnet(dict(sd), "diff.safetensors")
    model, _, _ = load_checkpoint(tiny_models / SD1)
    whole = with_base(net, model)
    assert net.difference and not whole.difference
    unet = model.unet.state_dict()
    name = "down_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(whole.model.state_dict()[name], net.model.state_dict()[name] + unet[name])
    assert torch.equal(  # not in the UNet: unchanged
        whole.model.state_dict()["controlnet_mid_block.weight"], net.model.state_dict()["controlnet_mid_block.weight"]
    )
    plain = build_controlnet(tiny_controlnet(ModelFamily.SD1), "plain.safetensors")
    assert with_base(plain, model) is plain
    # a LoRA on the model is part of the base added, as ComfyUI adds the patched weights
    lora = load_lora_file(tiny_models / "loras" / "tiny-sd15-lora.safetensors")
    patched_model, _ = apply_lora(lora, "tiny-sd15-lora", model, None, 1.0, 0.0)
    assert patched_model is not None
    query = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    with torch.no_grad(), merged([("", model.unet)], patched_model.lora):
        expected = net.model.state_dict()[query] + model.unet.state_dict()[query]
    assert torch.equal(with_base(net, patched_model).model.state_dict()[query], expected)
    assert not torch.equal(expected, whole.model.state_dict()[query])


# --- nodes ------------------------------------------------------------------------------------------------------


def _net() -> ControlNet:
    return ControlNet(model=torch.nn.Identity(), source="n")


def _cond(*extras: dict[str, Any]) -> list[list[Any]]:
    return [[torch.zeros(1, 77, 8), dict(e)] for e in extras]


def test_apply_advanced_shares_one_copy_per_previous_controlnet_and_chains() -> None:
    image = torch.rand(2, 16, 24, 3)
    positive, negative = cn.ControlNetApplyAdvanced().apply_controlnet(
        _cond({}, {}), _cond({"x": 1}), _net(), image, 0.7, 0.2, 0.9
    )
    nets = {id(e[1]["control"]) for e in positive + negative}
    assert len(nets) == 1
    applied = positive[0][1]["control"]
    assert applied.strength == 0.7 and applied.percent == (0.2, 0.9) and applied.previous is None
    assert applied.hint is not None and applied.hint.shape == (2, 3, 16, 24)
    assert negative[0][1]["x"] == 1 and negative[0][1]["control_apply_to_uncond"] is False
    positive2, _ = cn.ControlNetApplyAdvanced().apply_controlnet(positive, negative, _net(), image, 1.0, 0.0, 1.0)
    assert positive2[0][1]["control"].previous is applied
    assert positive2[0][1]["control"].chain()[0] is applied
    assert "control" not in _cond({})[0][1]  # inputs untouched


def test_strength_0_returns_the_conditioning_unchanged() -> None:
    positive, negative = _cond({}), _cond({})
    assert cn.ControlNetApplyAdvanced().apply_controlnet(
        positive, negative, _net(), torch.rand(1, 8, 8, 3), 0, 0, 1
    ) == (
        positive,
        negative,
    )
    assert cn.ControlNetApply().apply_controlnet(positive, _net(), torch.rand(1, 8, 8, 3), 0.0)[0] is positive


def test_apply_old_gives_each_entry_its_own_copy_for_both_sides() -> None:
    (out,) = cn.ControlNetApply().apply_controlnet(_cond({}, {}), _net(), torch.rand(1, 8, 8, 3), 0.5)
    assert out[0][1]["control"] is not out[1][1]["control"]
    assert all(e[1]["control_apply_to_uncond"] is True and e[1]["control"].percent == (0.0, 1.0) for e in out)


def test_bad_inputs_get_clear_errors() -> None:
    node: Any = cn.ControlNetApplyAdvanced()
    with pytest.raises(NodeInputError, match=r"image must be an IMAGE of shape \[batch, height, width, channels\]"):
        node.apply_controlnet(_cond({}), _cond({}), _net(), torch.rand(8, 8, 3), 1.0, 0.0, 1.0)
    with pytest.raises(NodeInputError, match="control_net must be a CONTROL_NET"):
        node.apply_controlnet(_cond({}), _cond({}), "nope", torch.rand(1, 8, 8, 3), 1.0, 0.0, 1.0)
    with pytest.raises(NodeInputError, match="negative must be a CONDITIONING"):
        node.apply_controlnet(_cond({}), "x", _net(), torch.rand(1, 8, 8, 3), 1.0, 0.0, 1.0)
    with pytest.raises(NodeInputError, match="type must be 'auto' or one of"):
        cn.SetUnionControlNetType().set_controlnet_type(_net(), "nope")
    copied = cn.SetUnionControlNetType().set_controlnet_type(_net(), "depth")[0]
    assert isinstance(copied, ControlNet)


def test_controlnet_apply_hands_its_controlnets_to_a_negative_side_without_any() -> None:
    a, b, c = _net(), _net(), _net()
    positive = _cond(
        {"control": a, "control_apply_to_uncond": True},
        {"control": b, "control_apply_to_uncond": True},
        {"control": c, "control_apply_to_uncond": False},
    )
    filled = fill_uncond_controls(positive, _cond({"k": 1}))
    assert filled[0][1] == {"k": 1, "control": b}  # the last one wins, as in ComfyUI
    two = fill_uncond_controls(positive, _cond({}, {}))
    assert [e[1]["control"] for e in two] == [a, b]
    already = _cond({"control": c})
    assert fill_uncond_controls(positive, already)[0] is already[0]
    advanced = _cond({"control": c, "control_apply_to_uncond": False})
    assert fill_uncond_controls(advanced, _cond({}))[0][1] == {}


# --- sampling ---------------------------------------------------------------------------------------------------


def _text(clip: Any, text: str) -> Any:
    return CLIPTextEncode().encode(clip, text)[0]


def _sample(model: DiffusionModel, positive: Any, negative: Any, batch: int = 1, steps: int = 3) -> torch.Tensor:
    latent = EmptyLatentImage().generate(64, 64, batch)[0]
    (out,) = KSampler().sample(model, 3, steps, 5.0, "euler", "normal", positive, negative, latent)
    return out["samples"]


@pytest.fixture(scope="module")
def sd1(tiny_models: Path) -> tuple[DiffusionModel, Any, Any, ControlNet]:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SD1)
    return model, _text(clip, "a fox"), _text(clip, "blurry"), load_controlnet(tiny_models / SD1_CN)


def _advanced(
    positive: Any, negative: Any, net: ControlNet, strength: float, start: float, end: float
) -> tuple[Any, Any]:
    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(0))
    return cn.ControlNetApplyAdvanced().apply_controlnet(positive, negative, net, image, strength, start, end)


def test_a_controlnet_outside_its_range_or_at_strength_0_changes_nothing_exactly(sd1: Any) -> None:
    model, positive, negative, net = sd1
    plain = _sample(model, positive, negative)
    assert torch.equal(_sample(model, *_advanced(positive, negative, net, 0.0, 0.0, 1.0)), plain)
    # end == start == 1: the range is sigma 0 only, which no model call sees
    assert torch.equal(_sample(model, *_advanced(positive, negative, net, 1.0, 1.0, 1.0)), plain)
    assert not torch.equal(_sample(model, *_advanced(positive, negative, net, 1.0, 0.0, 1.0)), plain)


class _Recording(torch.nn.Module):
    """A ControlNetModel that records the timesteps it is called at."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.config = inner, inner.config
        self.timesteps: list[float] = []

    def forward(self, **kwargs: Any) -> Any:
        self.timesteps.append(float(kwargs["timestep"][0]))
        return self.inner(**kwargs)


def test_start_and_end_percent_map_to_the_model_s_sigmas(sd1: Any) -> None:
    model, positive, negative, net = sd1
    recording = _Recording(net.model)
    schedule = schedule_for(model.sampling)
    _sample(model, *_advanced(positive, negative, net.copy(model=recording), 1.0, 0.3, 0.7), steps=8)
    called = sorted(set(recording.timesteps), reverse=True)
    low, high = schedule.timestep(schedule.percent_to_sigma(0.7)), schedule.timestep(schedule.percent_to_sigma(0.3))
    assert called and all(low <= t <= high for t in called)
    assert len(recording.timesteps) == len(called)  # positive and negative share one batched call per step
    everywhere = _Recording(net.model)
    _sample(model, *_advanced(positive, negative, net.copy(model=everywhere), 1.0, 0.0, 1.0), steps=8)
    assert len(everywhere.timesteps) == 8 > len(called)


def _kwargs(model: DiffusionModel, positive: Any, batch: int = 1) -> tuple[dict[str, Any], Any]:
    """The UNet's residual arguments for the first entry of ``positive`` at sigma 1."""
    latent = torch.zeros(batch, 4, 8, 8)
    inputs = SamplingInputs(latent=latent, denoise_mask=None, device=latent.device, dtype=torch.float32)
    (cond,) = prepare_conds(model, schedule_for(model.sampling), positive, "positive", inputs)
    assert cond.control is not None
    x = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    timesteps = torch.full((batch,), 500.0)
    with torch.no_grad():
        return cond.control.unet_kwargs(x, 1.0, timesteps, cond.context, None), cond.control


def _residuals(kwargs: dict[str, Any]) -> list[torch.Tensor]:
    return [*kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"]]


def test_strength_scales_chained_controlnets_add_and_pooling_flattens(sd1: Any) -> None:
    model, positive, negative, net = sd1
    one = _residuals(_kwargs(model, _advanced(positive, negative, net, 1.0, 0.0, 1.0)[0])[0])
    half = _residuals(_kwargs(model, _advanced(positive, negative, net, 0.5, 0.0, 1.0)[0])[0])
    assert len(one) == 13  # 12 down-block skips and the middle block of a 4-level, 2-layer UNet
    assert all(torch.equal(h, o * 0.5) for h, o in zip(half, one, strict=True))
    first = _advanced(positive, negative, net, 1.0, 0.0, 1.0)
    chained = _residuals(_kwargs(model, _advanced(*first, net, 0.5, 0.0, 1.0)[0])[0])
    assert all(torch.allclose(c, o + h) for c, o, h in zip(chained, one, half, strict=True))
    pooled = _residuals(
        _kwargs(model, _advanced(positive, negative, net.copy(global_average_pooling=True), 1, 0, 1)[0])[0]
    )
    for residual, original in zip(pooled, one, strict=True):
        assert torch.allclose(residual, original.mean(dim=(2, 3), keepdim=True).expand_as(original), atol=1e-6)


def test_the_hint_is_centre_cropped_resized_and_repeated_to_the_batch(sd1: Any) -> None:
    model, positive, negative, net = sd1
    hint = torch.zeros(2, 32, 96, 3)
    hint[0, :, 32:64] = 1.0  # the centre square of the first image is white, its sides black
    hint[1] = 0.5
    applied = cn.ControlNetApplyAdvanced().apply_controlnet(positive, negative, net, hint, 1.0, 0.0, 1.0)[0]
    _, prepared = _kwargs(model, applied, batch=3)
    (stage,) = prepared.stages
    assert stage.hint.shape == (3, 3, 64, 64)  # the latent size × 8
    assert torch.equal(stage.hint[0], torch.ones(3, 64, 64)) and torch.equal(stage.hint[2], stage.hint[0])
    assert torch.equal(stage.hint[1], torch.full((3, 64, 64), 0.5))


def test_a_controlnet_of_another_family_is_refused(sd1: Any, tiny_models: Path) -> None:  # noqa: F811
    model, positive, negative, _ = sd1
    xl = load_controlnet(tiny_models / SDXL_CN)
    with pytest.raises(NodeInputError, match="does not fit this model"):
        _sample(model, *_advanced(positive, negative, xl, 1.0, 0.0, 1.0))


def test_sdxl_controlnet_steers_sampling(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SDXL)
    positive, negative = _text(clip, "a fox"), _text(clip, "blurry")
    net = load_controlnet(tiny_models / SDXL_CN)
    plain = _sample(model, positive, negative, batch=2, steps=2)
    controlled = _sample(model, *_advanced(positive, negative, net, 1.0, 0.0, 1.0), batch=2, steps=2)
    assert controlled.shape == plain.shape and not torch.allclose(controlled, plain)


def test_make_test_models_writes_the_controlnet_a_workflow_asks_for(tmp_path: Path) -> None:
    written = make_test_models(tmp_path, [next(COMPAT.glob("11_*.json"))])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "checkpoints/v1-5-pruned-emaonly.ckpt",
        "controlnet/control_v11p_sd15_scribble.pth",
        "vae/vae-ft-mse-840000-ema-pruned.safetensors",
    ]
    net = load_controlnet(tmp_path / "controlnet" / "control_v11p_sd15_scribble.pth")
    assert net.model.config.block_out_channels == [16, 32, 48, 48]
