"""Family detection, and proof that tiny test models have the layout of the real published checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from comfyserve.models import configs, layout
from comfyserve.models.checkpoint import convert_text_encoder
from comfyserve.models.detect import V_PRED_NORM_KEY, UnrecognisedCheckpoint, detect
from comfyserve.models.files import read_state_dict
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import DEFAULT_FILES, tiny_checkpoint
from tests.unit.models_fixtures import tiny_models  # noqa: F401

CHECKPOINTS = {name: family for name, (kind, family) in DEFAULT_FILES.items() if kind == "checkpoint"}


def _meta(shapes: layout.Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_each_tiny_file_is_detected_as_its_family(tiny_models: Path, name: str) -> None:  # noqa: F811
    found = detect(read_state_dict(tiny_models / name))
    family = CHECKPOINTS[name]
    assert found.family is family
    assert found.in_channels == (9 if family is ModelFamily.SD1_INPAINT else 4)
    assert found.sampling.prediction == ("v_prediction" if family is ModelFamily.SD2_V else "eps")


@pytest.mark.parametrize("family", list(ModelFamily))
def test_tiny_layout_has_exactly_the_keys_of_the_full_size_layout(family: ModelFamily) -> None:
    tiny = layout.checkpoint_shapes(family, layout.TINY[family])
    full = layout.checkpoint_shapes(family, layout.FULL_SIZE[family])
    assert set(tiny) == set(full)
    assert all(len(tiny[k]) == len(full[k]) for k in full)


def test_full_size_layouts_match_the_published_key_and_parameter_counts() -> None:
    sd15 = layout.checkpoint_shapes(ModelFamily.SD1, layout.FULL_SIZE[ModelFamily.SD1])
    sdxl = layout.checkpoint_shapes(ModelFamily.SDXL, layout.FULL_SIZE[ModelFamily.SDXL])
    # v1-5-pruned-emaonly: 1131 tensors (UNet 686, VAE 248, CLIP-L 197), 1.066 B parameters.
    assert len(sd15) == 1131
    assert sum(k.startswith(layout.UNET_PREFIX) for k in sd15) == 686
    assert sum(k.startswith(layout.VAE_PREFIX) for k in sd15) == 248
    assert round(sum(torch.Size(s).numel() for s in sd15.values()) / 1e6) == 1066
    # sd_xl_base_1.0: 2515 tensors, UNet 1680, 3.469 B parameters.
    assert len(sdxl) == 2515
    assert sum(k.startswith(layout.UNET_PREFIX) for k in sdxl) == 1680
    assert round(sum(torch.Size(s).numel() for s in sdxl.values()) / 1e6) == 3469


@pytest.mark.parametrize("family", list(ModelFamily))
def test_full_size_shapes_derive_the_bundled_configs_and_convert_onto_them(family: ModelFamily) -> None:
    """diffusers' converter maps the full-size layout onto exactly the bundled configs' parameters."""
    dims = layout.FULL_SIZE[family]
    unet_ldm = _meta(layout.unet_shapes(dims.unet))
    bare = {k[len(layout.UNET_PREFIX) :]: v for k, v in unet_ldm.items()}
    config = configs.unet_config(family, bare)
    bundled = configs.bundled_config(family, "unet")
    if family is ModelFamily.SD1_INPAINT:
        bundled["in_channels"] = 9
    assert config == bundled
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    expected = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    converted = {k: tuple(v.shape) for k, v in convert_ldm_unet_checkpoint(unet_ldm, config).items()}
    assert converted == expected

    vae_ldm = _meta(layout.vae_shapes(dims.vae, prefix=""))
    vae_config = configs.vae_config(family, vae_ldm)
    assert vae_config == configs.bundled_config(family, "vae")
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_config)
    converted_vae = {k: tuple(v.shape) for k, v in convert_ldm_vae_checkpoint(vae_ldm, vae_config).items()}
    assert converted_vae == {k: tuple(v.shape) for k, v in vae.state_dict().items()}


TEXT_ENCODERS: dict[ModelFamily, list[tuple[str, str]]] = {
    ModelFamily.SD1: [(layout.SD1_CLIP_PREFIX, "text_encoder")],
    ModelFamily.SD2: [(layout.SD2_CLIP_PREFIX, "text_encoder")],
    ModelFamily.SDXL: [(layout.XL_CLIP_L_PREFIX, "text_encoder"), (layout.XL_CLIP_G_PREFIX, "text_encoder_2")],
    ModelFamily.SDXL_REFINER: [(layout.REFINER_CLIP_G_PREFIX, "text_encoder_2")],
}


@pytest.mark.parametrize("family", list(TEXT_ENCODERS))
def test_full_size_text_encoders_convert_onto_the_bundled_configs(family: ModelFamily) -> None:
    full = _meta(layout.checkpoint_shapes(family, layout.FULL_SIZE[family]))
    for prefix, component in TEXT_ENCODERS[family]:
        converted = convert_text_encoder(full, prefix)
        config = configs.text_config(family, component, converted)
        assert config == configs.bundled_config(family, component)
        cls = CLIPTextModelWithProjection if "text_projection.weight" in converted else CLIPTextModel
        with torch.device("meta"):
            encoder = cls(CLIPTextConfig(**config))
        expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
        if "text_model.embeddings.token_embedding.weight" not in expected:
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        got = {k: tuple(v.shape) for k, v in converted.items() if k in expected or not k.endswith("position_ids")}
        assert got == expected


def test_sd2_eps_and_v_prediction_follow_the_norm_bias_spread() -> None:
    sd = tiny_checkpoint(ModelFamily.SD2_V)
    assert detect(sd).family is ModelFamily.SD2_V
    sd[V_PRED_NORM_KEY] = torch.full_like(sd[V_PRED_NORM_KEY], 0.01)
    found = detect(sd)
    assert (found.family, found.sampling.prediction) == (ModelFamily.SD2, "eps")


def test_a_v_pred_key_marks_v_prediction_and_ztsnr() -> None:
    sd = tiny_checkpoint(ModelFamily.SDXL)
    sd["v_pred"] = torch.tensor([])
    sd["ztsnr"] = torch.tensor([])
    found = detect(sd)
    assert (found.family, found.sampling.prediction, found.sampling.zsnr) == (ModelFamily.SDXL, "v_prediction", True)


def test_a_file_without_unet_names_what_it_found() -> None:
    sd = {"first_stage_model.encoder.conv_in.weight": torch.zeros(1), "lora_unet_x.alpha": torch.zeros(1)}
    with pytest.raises(UnrecognisedCheckpoint) as info:
        detect(sd)
    assert str(info.value) == (
        "unrecognised checkpoint: no UNet keys (model.diffusion_model.*) found; "
        "top-level prefixes: first_stage_model.encoder, lora_unet_x.alpha"
    )


def test_text_encoder_width_must_match_the_unet() -> None:
    sd = tiny_checkpoint(ModelFamily.SD1)
    key = layout.SD1_CLIP_PREFIX + "text_model.embeddings.token_embedding.weight"
    sd[key] = torch.zeros(49408, 24)
    with pytest.raises(UnrecognisedCheckpoint) as info:
        detect(sd)
    assert str(info.value) == "unrecognised checkpoint: its sd1 text encoders are 24 wide but its UNet attends to 16"


def test_a_bare_unet_falls_back_on_its_context_width() -> None:
    shapes = layout.unet_shapes(layout.FULL_SIZE[ModelFamily.SD2].unet)
    found = detect(_meta(shapes) | {V_PRED_NORM_KEY: torch.zeros(1280)})
    assert found.family is ModelFamily.SD2
    assert found.context_dim == 1024
