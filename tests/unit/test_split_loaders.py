"""UNETLoader, CLIPLoader and DualCLIPLoader: catalog entries equal to ComfyUI 0.3.64's
(``tests/data/comfyui_object_info/split_loaders.json``), a tiny checkpoint split into its published file
layouts gives the very images the checkpoint gives, and wrong types and files are refused by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.engine import context
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import validate_prompt
from comfyserve.models import layout, testsplit
from comfyserve.models.checkpoint import convert_text_encoder
from comfyserve.models.handles import DiffusionModel, ModelFamily, TextEncoder
from comfyserve.models.testmodels import make_test_models, save, split_part, tiny_checkpoint
from comfyserve.nodes import builtin_registry
from comfyserve.nodes import split_loaders as sl
from comfyserve.nodes.conditioning import CLIPTextEncode
from comfyserve.nodes.latent import EmptyLatentImage
from comfyserve.nodes.loaders import CheckpointLoaderSimple, VAELoader
from comfyserve.nodes.sampling import KSampler
from comfyserve.nodes.vae import VAEDecode
from tests.catalog_entries import comparable

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = json.loads((DATA / "comfyui_object_info" / "split_loaders.json").read_text())
SEED = 7


def _write_split(root: Path, name: str, family: ModelFamily) -> None:
    """``checkpoints/<name>.safetensors`` and its parts, in every layout the loaders accept."""
    checkpoint = tiny_checkpoint(family, SEED)
    save(checkpoint, root / "checkpoints" / f"{name}.safetensors")
    parts = testsplit.split_checkpoint(checkpoint, family)
    save(parts["vae"], root / "vae" / f"{name}-vae.safetensors")
    unet = parts[testsplit.UNET]
    save(unet, root / "diffusion_models" / f"{name}-unet.safetensors")
    save({layout.UNET_PREFIX + k: v for k, v in unet.items()}, root / "unet" / f"{name}-unet-prefixed.safetensors")
    save(testsplit.diffusers_unet(unet, family), root / "diffusion_models" / f"{name}-unet-diffusers.safetensors")
    for part in (testsplit.CLIP_L, testsplit.CLIP_H, testsplit.CLIP_G):
        if part in parts:
            save(parts[part], root / "text_encoders" / f"{name}-{part}.safetensors")
    if testsplit.CLIP_H in parts:  # diffusers' SD2.x text_encoder: transformers' layout, ViT-H's last layer left out
        prefixed = {layout.SD2_CLIP_PREFIX + k: v for k, v in parts[testsplit.CLIP_H].items()}
        converted = convert_text_encoder(prefixed, layout.SD2_CLIP_PREFIX)
        last = "text_model.encoder.layers.23."
        hf = {k: v for k, v in converted.items() if not k.startswith(last) and k != "text_projection.weight"}
        save(hf, root / "text_encoders" / f"{name}-clip_h-23-layers.safetensors")
    if testsplit.CLIP_G in parts:
        save(testsplit.transformers_clip(parts[testsplit.CLIP_G]), root / "clip" / f"{name}-clip_g-hf.safetensors")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("split-models")
    _write_split(root, "sd15", ModelFamily.SD1)
    _write_split(root, "sd21", ModelFamily.SD2_V)
    _write_split(root, "sdxl", ModelFamily.SDXL)
    (root / "text_encoders" / "broken.safetensors").write_bytes(b"")
    return root


@pytest.fixture()
def models(root: Path) -> Iterator[Path]:
    with context.use(RunContext(root, root, root, models=ModelInventory.scan(root))):
        yield root


def _image(model: DiffusionModel, clip: TextEncoder, vae: Any) -> torch.Tensor:
    positive = CLIPTextEncode().encode(clip, "a (red:1.2) barn")[0]
    negative = CLIPTextEncode().encode(clip, "blurry")[0]
    latent = EmptyLatentImage().generate(64, 64, 1)[0]
    samples = KSampler().sample(model, 3, 2, 7.0, "euler", "normal", positive, negative, latent)[0]
    image: torch.Tensor = VAEDecode().decode(vae, samples)[0]
    return image


def test_every_class_of_the_pack_has_comfyui_s_catalog_entry() -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()
    assert sorted(sl.NODE_CLASS_MAPPINGS) == sorted(REFERENCE)
    for name, reference in REFERENCE.items():
        assert comparable(ours[name]) == comparable(reference), name


@pytest.mark.parametrize(
    "unet", ["sd15-unet.safetensors", "sd15-unet-prefixed.safetensors", "sd15-unet-diffusers.safetensors"]
)
def test_a_split_sd15_gives_the_checkpoint_s_image(models: Path, unet: str) -> None:
    expected = _image(*CheckpointLoaderSimple().load_checkpoint("sd15.safetensors"))
    (model,) = sl.UNETLoader().load_unet(unet, "default")
    (clip,) = sl.CLIPLoader().load_clip("sd15-clip_l.safetensors", "stable_diffusion")
    (vae,) = VAELoader().load_vae("sd15-vae.safetensors")
    assert (model.family, clip.family, clip.stop_at_layer) == (ModelFamily.SD1, ModelFamily.SD1, -1)
    assert torch.equal(_image(model, clip, vae), expected)


def test_a_split_sd21_gives_the_checkpoint_s_image(models: Path) -> None:
    """CLIP-H alone is SD2.x's encoder; the UNet's v-prediction is told as ComfyUI tells it (norm bias)."""
    expected = _image(*CheckpointLoaderSimple().load_checkpoint("sd21.safetensors"))
    (model,) = sl.UNETLoader().load_unet("sd21-unet.safetensors", "default")
    (clip,) = sl.CLIPLoader().load_clip("sd21-clip_h.safetensors", "stable_diffusion", "cpu")
    (vae,) = VAELoader().load_vae("sd21-vae.safetensors")
    assert (model.family, model.sampling.prediction) == (ModelFamily.SD2_V, "v_prediction")
    assert (clip.family, clip.stop_at_layer) == (ModelFamily.SD2, -2)
    assert torch.equal(_image(model, clip, vae), expected)


def test_a_clip_h_file_without_its_last_layer_counts_layers_from_the_published_depth(models: Path) -> None:
    """diffusers publishes SD2.x's encoder with 23 of ViT-H's 24 layers; ComfyUI builds all 24, so its
    penultimate layer (SD2's default) is that file's last and the conditioning is the whole encoder's."""
    (whole,) = sl.CLIPLoader().load_clip("sd21-clip_h.safetensors", "stable_diffusion")
    (short,) = sl.CLIPLoader().load_clip("sd21-clip_h-23-layers.safetensors", "stable_diffusion")
    assert [e.layers for e in short.encoders] == [23]
    for layer in (-2, -5):
        expected = CLIPTextEncode().encode(whole.clone(stop_at_layer=layer), "a red barn")[0][0][0]
        got = CLIPTextEncode().encode(short.clone(stop_at_layer=layer), "a red barn")[0][0][0]
        assert torch.equal(got, expected), layer


@pytest.mark.parametrize(
    ("unet", "first", "second"),
    [
        ("sdxl-unet.safetensors", "sdxl-clip_l.safetensors", "sdxl-clip_g.safetensors"),
        ("sdxl-unet-diffusers.safetensors", "sdxl-clip_g-hf.safetensors", "sdxl-clip_l.safetensors"),
    ],
)
def test_a_split_sdxl_gives_the_checkpoint_s_image(models: Path, unet: str, first: str, second: str) -> None:
    """CLIP-L and CLIP-G in either order, bigG in OpenCLIP's or transformers' layout (from the older clip/)."""
    expected = _image(*CheckpointLoaderSimple().load_checkpoint("sdxl.safetensors"))
    (model,) = sl.UNETLoader().load_unet(unet, "default")
    (clip,) = sl.DualCLIPLoader().load_clip(first, second, "sdxl")
    (vae,) = VAELoader().load_vae("sdxl-vae.safetensors")
    assert (model.family, clip.family, clip.stop_at_layer) == (ModelFamily.SDXL, ModelFamily.SDXL, -2)
    assert [e.module.config.hidden_size for e in clip.encoders] == [8, 16]  # CLIP-L first
    assert torch.equal(_image(model, clip, vae), expected)


def test_clip_g_alone_is_the_refiner_s_encoder(models: Path) -> None:
    (clip,) = sl.CLIPLoader().load_clip("sdxl-clip_g.safetensors", "stable_diffusion")
    assert (clip.family, len(clip.encoders), clip.encoders[0].final_norm) == (ModelFamily.SDXL_REFINER, 1, False)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"])
def test_fp8_weight_dtypes_round_every_unet_weight_through_fp8(models: Path, weight_dtype: str) -> None:
    fp8 = torch.float8_e5m2 if weight_dtype == "fp8_e5m2" else torch.float8_e4m3fn
    (default,) = sl.UNETLoader().load_unet("sd15-unet.safetensors", "default")
    (rounded,) = sl.UNETLoader().load_unet("sd15-unet.safetensors", weight_dtype)
    stored, cast = default.unet.state_dict(), rounded.unet.state_dict()
    assert all(torch.equal(cast[k], stored[k].to(fp8).to(stored[k].dtype)) for k in stored)
    assert any(not torch.equal(cast[k], stored[k]) for k in stored)
    assert next(rounded.unet.parameters()).dtype == torch.float32  # kept and computed in the policy's dtype


def test_types_the_engine_does_not_serve_are_refused_naming_the_type(models: Path) -> None:
    with pytest.raises(NodeInputError) as single:
        sl.CLIPLoader().load_clip("sd15-clip_l.safetensors", "sd3")
    assert str(single.value) == (
        "CLIPLoader type 'sd3' is not served by this engine: it serves type 'stable_diffusion' "
        "(CLIP-L for SD1.x, CLIP-H for SD2.x, CLIP-G for the SDXL refiner)"
    )
    with pytest.raises(NodeInputError) as dual:
        sl.DualCLIPLoader().load_clip("sdxl-clip_l.safetensors", "sdxl-clip_g.safetensors", "flux")
    assert str(dual.value) == (
        "DualCLIPLoader type 'flux' is not served by this engine: it serves type 'sdxl' (CLIP-L and CLIP-G for SDXL)"
    )


def test_validation_refuses_an_unserved_type_without_the_node_classes() -> None:
    prompt: dict[str, dict[str, Any]] = {
        "1": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "a.sft", "clip_name2": "b.sft", "type": "flux"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 0], "text": "x"}},
        "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
    }
    result = validate_prompt(prompt, Catalog.packaged().specs, strict=False)
    [error] = result.node_errors["1"]["errors"]
    assert (error["type"], error["details"]) == (
        "value_not_served",
        "type: DualCLIPLoader type 'flux' is not served by this engine; it serves ['sdxl']",
    )
    prompt["1"]["inputs"]["type"] = "sdxl"
    assert validate_prompt(prompt, Catalog.packaged().specs).ok
    prompt["1"]["inputs"]["type"] = "nope"  # not even in ComfyUI's list: ComfyUI's own error
    assert (
        validate_prompt(prompt, Catalog.packaged().specs).node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    )


def test_wrong_files_are_refused_by_name(models: Path) -> None:
    cases = [
        (
            lambda: sl.UNETLoader().load_unet("nope.safetensors", "default"),
            "model file 'nope.safetensors' is not in the diffusion_models folder",
        ),
        (
            lambda: sl.CLIPLoader().load_clip("sd15-unet.safetensors", "stable_diffusion"),
            "model file 'sd15-unet.safetensors' is not in the text_encoders folder",
        ),
        (
            lambda: sl.CLIPLoader().load_clip("broken.safetensors", "stable_diffusion"),
            "cannot read model file 'broken.safetensors': the file is truncated or corrupt",
        ),
        (
            lambda: sl.DualCLIPLoader().load_clip("sd15-clip_l.safetensors", "sdxl-clip_l.safetensors", "sdxl"),
            "DualCLIPLoader type 'sdxl' needs a CLIP-L and a CLIP-G text encoder: clip_name1 "
            "'sd15-clip_l.safetensors' is CLIP-L, clip_name2 'sdxl-clip_l.safetensors' is CLIP-L",
        ),
    ]
    for call, message in cases:
        with pytest.raises(NodeInputError) as info:
            call()
        assert str(info.value) == message


def test_a_text_encoder_as_a_diffusion_model_and_a_unet_as_a_text_encoder_are_refused(tmp_path: Path) -> None:
    save(split_part(testsplit.CLIP_L, ModelFamily.SD1), tmp_path / "diffusion_models" / "te.safetensors")
    save(split_part(testsplit.UNET, ModelFamily.SD1), tmp_path / "text_encoders" / "unet.safetensors")
    with context.use(RunContext(tmp_path, tmp_path, tmp_path, models=ModelInventory.scan(tmp_path))):
        with pytest.raises(NodeInputError) as unet:
            sl.UNETLoader().load_unet("te.safetensors", "default")
        with pytest.raises(NodeInputError) as clip:
            sl.CLIPLoader().load_clip("unet.safetensors", "stable_diffusion")
    assert str(unet.value) == (
        "model file 'te.safetensors' is not an SD1.x/SD2.x/SDXL diffusion model (no input_blocks.* or down_blocks.* "
        "UNet weights; top-level prefixes: text_model.encoder, text_model.embeddings, text_model.final_layer_norm)"
    )
    assert str(clip.value).startswith(
        "model file 'unet.safetensors' is not a CLIP text encoder (no text_model.* or transformer.resblocks.* "
        "weights; top-level prefixes: "
    )


def test_make_test_models_writes_the_split_files_a_workflow_names(tmp_path: Path) -> None:
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "sd15/unet.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "sd15-te.safetensors", "type": "stable_diffusion"}},
        "3": {"class_type": "UNETLoader", "inputs": {"unet_name": "xl-unet.safetensors", "weight_dtype": "default"}},
        "4": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "clip_g.safetensors", "clip_name2": "clip_l.safetensors", "type": "sdxl"},
        },
    }
    workflow = tmp_path / "split.json"
    workflow.write_text(json.dumps(prompt))
    written = make_test_models(tmp_path / "models", [workflow])
    assert sorted(p.relative_to(tmp_path / "models").as_posix() for p in written) == [
        "diffusion_models/sd15/unet.safetensors",
        "diffusion_models/xl-unet.safetensors",
        "text_encoders/clip_g.safetensors",
        "text_encoders/clip_l.safetensors",
        "text_encoders/sd15-te.safetensors",
    ]
    with context.use(RunContext(tmp_path, tmp_path, tmp_path, models=ModelInventory.scan(tmp_path / "models"))):
        (sd15,) = sl.UNETLoader().load_unet("sd15/unet.safetensors", "default")
        (sd15_clip,) = sl.CLIPLoader().load_clip("sd15-te.safetensors", "stable_diffusion")
        (xl,) = sl.UNETLoader().load_unet("xl-unet.safetensors", "default")
        (xl_clip,) = sl.DualCLIPLoader().load_clip("clip_g.safetensors", "clip_l.safetensors", "sdxl")
    assert (sd15.family, sd15_clip.family, xl.family, xl_clip.family) == (
        ModelFamily.SD1,
        ModelFamily.SD1,
        ModelFamily.SDXL,
        ModelFamily.SDXL,
    )
