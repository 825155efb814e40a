"""LoRA: key formats, merge equal to a hand computation, stacking, reuse of the base model, wrong families."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from comfyserve.engine import context
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import read_state_dict
from comfyserve.models.lora import apply_lora, load_lora_file, merged, patched
from comfyserve.nodes.loaders import LoraLoader, LoraLoaderModelOnly
from tests.unit.models_fixtures import SD1, SDXL, tiny_models  # noqa: F401

SD1_LORA = "loras/tiny-sd15-lora.safetensors"
SDXL_LORA = "loras/tiny-sdxl-lora.safetensors"
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
KOHYA_Q = "lora_unet_" + Q.replace(".", "_")
TE_FC1 = "lora_te_text_model_encoder_layers_3_mlp_fc1"


def _hand_delta(lora: dict[str, torch.Tensor], name: str, strength: float) -> torch.Tensor:
    up, down = lora[f"{name}.lora_up.weight"].float(), lora[f"{name}.lora_down.weight"].float()
    alpha = float(lora[f"{name}.alpha"])
    return strength * alpha / down.shape[0] * (up.flatten(1) @ down.flatten(1))


def test_patched_unet_weight_is_w_plus_strength_scale_up_down(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SD1)
    lora = read_state_dict(tiny_models / SD1_LORA)
    patched_model, _ = apply_lora(lora, "style", model, clip, 0.8, 1.0)
    assert patched_model is not None
    weight = patched_model.unet.get_parameter(Q + ".weight")
    original = weight.data
    expected = original + _hand_delta(lora, KOHYA_Q, 0.8)
    with patched(patched_model) as unet:
        torch.testing.assert_close(unet.get_parameter(Q + ".weight"), expected, rtol=0, atol=1e-6)
    assert weight.data_ptr() == original.data_ptr()  # the base model's own tensor is back
    assert torch.equal(weight, original)
    assert model.lora == ()


def test_every_key_of_the_kohya_files_finds_its_target(tiny_models: Path) -> None:  # noqa: F811
    for checkpoint, lora_name in ((SD1, SD1_LORA), (SDXL, SDXL_LORA)):
        model, clip, _ = load_checkpoint(tiny_models / checkpoint)
        lora = read_state_dict(tiny_models / lora_name)
        new_model, new_clip = apply_lora(lora, lora_name, model, clip, 1.0, 1.0)
        assert new_model is not None and new_clip is not None
        patches = len(new_model.lora[0].deltas) + len(new_clip.lora[0].deltas)
        assert patches * 3 == len(lora)  # up, down, alpha per module


def test_text_encoder_patch_and_stacking(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SD1)
    lora = read_state_dict(tiny_models / SD1_LORA)
    _, once = apply_lora(lora, "a", model, clip, 1.0, 0.5)
    assert once is not None
    _, twice = apply_lora(lora, "b", model, once, 1.0, -0.25)
    assert twice is not None
    encoder = clip.encoders[0].module
    name = "encoder.layers.3.mlp.fc1.weight"
    if "text_model.encoder.layers.3.mlp.fc1.weight" in encoder.state_dict():
        name = "text_model." + name
    original = encoder.get_parameter(name).data.clone()
    with merged([("0.", encoder)], twice.lora):
        # text encoders are kept in fp16 (as ComfyUI keeps them): the patch is summed in fp32, then stored in fp16
        expected = original.float() + _hand_delta(lora, TE_FC1, 0.5) + _hand_delta(lora, TE_FC1, -0.25)
        patched = encoder.get_parameter(name).data
        assert patched.dtype == torch.float16
        torch.testing.assert_close(patched.float(), expected, rtol=0, atol=1e-3)
    assert torch.equal(encoder.get_parameter(name).data, original)


def test_pth_and_peft_formats_give_the_same_patch(tiny_models: Path) -> None:  # noqa: F811
    model, _, _ = load_checkpoint(tiny_models / SD1)
    kohya = read_state_dict(tiny_models / SD1_LORA)
    pth = load_lora_file(tiny_models / "loras" / "tiny-sd15-lora.pth")
    peft = {
        f"unet.{Q}.lora_A.weight": kohya[f"{KOHYA_Q}.lora_down.weight"],
        f"unet.{Q}.lora_B.weight": kohya[f"{KOHYA_Q}.lora_up.weight"],
    }
    from_kohya, _ = apply_lora({k: v for k, v in kohya.items() if k.startswith(KOHYA_Q)}, "k", model, None, 1.0, 0)
    from_pth, _ = apply_lora(pth, "p", model, None, 1.0, 0)
    from_peft, _ = apply_lora(peft, "d", model, None, 1.0, 0)
    assert from_kohya is not None and from_pth is not None and from_peft is not None
    up, down, scale = from_kohya.lora[0].deltas[Q + ".weight"]
    assert scale == 0.5  # alpha 2 / rank 4
    assert torch.equal(from_pth.lora[0].deltas[Q + ".weight"][0], up)
    peft_up, peft_down, peft_scale = from_peft.lora[0].deltas[Q + ".weight"]
    assert (torch.equal(peft_up, up), torch.equal(peft_down, down), peft_scale) == (True, True, 1.0)


def test_a_lora_for_another_family_is_refused(tiny_models: Path) -> None:  # noqa: F811
    sd1 = load_checkpoint(tiny_models / SD1)
    xl = load_checkpoint(tiny_models / SDXL)
    with pytest.raises(ModelFileError) as info:
        apply_lora(read_state_dict(tiny_models / SD1_LORA), "sd15.safetensors", xl[0], xl[1], 1.0, 1.0)
    assert str(info.value).startswith("LoRA 'sd15.safetensors' does not match this SDXL model: ")
    with pytest.raises(ModelFileError) as info:
        apply_lora(read_state_dict(tiny_models / SDXL_LORA), "xl.safetensors", sd1[0], sd1[1], 1.0, 1.0)
    assert re.fullmatch(
        r"LoRA 'xl.safetensors' does not match this SD1.x model: \d+ of its 2958 keys have no target "
        r"\(\d+ of them target weights of another shape\)",
        str(info.value),
    )


def test_loader_nodes(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SDXL)
    ctx = RunContext(tiny_models, tiny_models, tiny_models, models=ModelInventory.scan(tiny_models))
    with context.use(ctx):
        new_model, new_clip = LoraLoader().load_lora(model, clip, "tiny-sdxl-lora.safetensors", 1.0, 1.0)
        (only,) = LoraLoaderModelOnly().load_lora_model_only(model, "tiny-sdxl-lora.pth", 0.5)
        assert LoraLoader().load_lora(model, clip, "tiny-sdxl-lora.pth", 0.0, 0.0) == (model, clip)
        with pytest.raises(NodeInputError) as info:
            LoraLoaderModelOnly().load_lora_model_only(model, "tiny-sd15-lora.pth", 1.0)
    assert new_model is not None and new_clip is not None and only is not None
    assert (len(new_model.lora), len(new_clip.lora), len(only.lora), only.lora[0].strength) == (1, 1, 1, 0.5)
    assert str(info.value).startswith("LoRA 'tiny-sd15-lora.pth' does not match this SDXL model")
