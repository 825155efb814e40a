"""Loading checkpoints and VAEs offline, the model cache, and clear errors for damaged files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from comfyserve.engine import context
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.models import layout
from comfyserve.models.cache import ModelFileCache, model_cache
from comfyserve.models.checkpoint import build_checkpoint, load_checkpoint, load_vae
from comfyserve.models.device import DevicePolicy
from comfyserve.models.errors import ModelFileError
from comfyserve.models.handles import ModelFamily
from comfyserve.models.memory import DeviceResidency
from comfyserve.models.testmodels import save, tiny_checkpoint
from comfyserve.nodes.loaders import CheckpointLoaderSimple
from tests.unit.models_fixtures import REFINER, SD1, SD1_INPAINT, SD2_V, SDXL, no_network, tiny_models  # noqa: F401


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize(
    ("name", "family", "widths", "default_layer"),
    [
        (SD1, ModelFamily.SD1, [16], -1),
        (SD1_INPAINT, ModelFamily.SD1_INPAINT, [16], -1),
        (SD2_V, ModelFamily.SD2_V, [16], -2),
        (SDXL, ModelFamily.SDXL, [8, 16], -2),
        (REFINER, ModelFamily.SDXL_REFINER, [16], -2),
    ],
)
def test_every_family_loads_with_the_network_disabled(
    tiny_models: Path,  # noqa: F811
    name: str,
    family: ModelFamily,
    widths: list[int],
    default_layer: int,
) -> None:
    model, clip, vae = load_checkpoint(tiny_models / name)
    unet: Any = model.unet
    assert isinstance(model.unet, UNet2DConditionModel)
    assert (model.family, clip.family) == (family, family)
    assert unet.config.in_channels == model.in_channels == (9 if family is ModelFamily.SD1_INPAINT else 4)
    assert [e.module.config.hidden_size for e in clip.encoders] == widths
    assert clip.stop_at_layer == default_layer
    assert isinstance(vae.vae, AutoencoderKL)
    assert vae.scaling_factor == (0.13025 if family.is_xl else 0.18215)
    assert next(unet.parameters()).dtype == torch.float32  # CPU policy
    assert unet.training is False


def test_loaded_weights_equal_the_file(tiny_models: Path) -> None:  # noqa: F811
    model, clip, vae = load_checkpoint(tiny_models / SD1)
    from comfyserve.models.files import read_state_dict

    sd = read_state_dict(tiny_models / SD1)
    assert torch.equal(model.unet.conv_in.weight, sd[layout.UNET_PREFIX + "input_blocks.0.0.weight"].float())
    token = layout.SD1_CLIP_PREFIX + "text_model.embeddings.token_embedding.weight"
    assert torch.equal(clip.encoders[0].module.get_input_embeddings().weight, sd[token].float())
    assert torch.equal(vae.vae.encoder.conv_in.weight, sd[layout.VAE_PREFIX + "encoder.conv_in.weight"].float())


def test_same_file_twice_is_one_load_and_a_changed_file_reloads(tmp_path: Path, tiny_models: Path) -> None:  # noqa: F811
    path = tmp_path / "model.safetensors"
    shutil.copy(tiny_models / SD1, path)
    first = load_checkpoint(path)
    loads = model_cache().loads
    assert load_checkpoint(path) is first
    assert model_cache().loads == loads
    save(tiny_checkpoint(ModelFamily.SD1, seed=7), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_checkpoint(path)
    assert second is not first
    assert model_cache().loads == loads + 1
    assert not torch.equal(second[0].unet.conv_in.weight, first[0].unet.conv_in.weight)


def test_cache_evicts_least_recently_used_beyond_its_budget(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(b"x")
    cache = ModelFileCache(budget_bytes=20)
    loaded: list[str] = []

    def load(path: Path) -> tuple[str, int]:
        loaded.append(path.name)
        return path.name, 10

    for path in (files[0], files[1], files[0], files[2], files[0], files[1]):
        cache.get_or_load("x", path, load)
    assert loaded == ["0.bin", "1.bin", "2.bin", "1.bin"]


def test_a_truncated_safetensors_file_is_a_clear_error(tmp_path: Path, tiny_models: Path) -> None:  # noqa: F811
    path = tmp_path / "broken.safetensors"
    path.write_bytes((tiny_models / SD1).read_bytes()[:100_000])
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(path)
    assert str(info.value) == "cannot read model file 'broken.safetensors': the file is truncated or corrupt"


def test_a_corrupt_ckpt_is_a_clear_error_and_a_good_one_loads(tmp_path: Path) -> None:
    sd = tiny_checkpoint(ModelFamily.SD1)
    good = tmp_path / "good.ckpt"
    save(sd, good)
    assert load_checkpoint(good)[0].family is ModelFamily.SD1
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(bad)
    assert str(info.value) == "cannot read model file 'bad.ckpt': the file is truncated or corrupt"


def test_a_checkpoint_missing_a_weight_names_it() -> None:
    sd = tiny_checkpoint(ModelFamily.SD1)
    del sd[layout.UNET_PREFIX + "out.2.bias"]
    with pytest.raises(ModelFileError) as info:
        build_checkpoint(sd, "partial.safetensors")
    assert str(info.value) == (
        "model file 'partial.safetensors': its UNet weights do not fit the expected layout "
        "(1 missing, e.g. conv_out.bias)"
    )


def test_a_standalone_vae_file_loads(tiny_models: Path) -> None:  # noqa: F811
    vae = load_vae(tiny_models / "vae" / "tiny-vae.safetensors")
    assert isinstance(vae.vae, AutoencoderKL)
    assert vae.scaling_factor == 0.18215


def test_the_loader_node_turns_file_errors_into_node_input_errors(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "empty.safetensors").write_bytes(b"")
    ctx = RunContext(tmp_path, tmp_path, tmp_path, models=ModelInventory.scan(tmp_path))
    with context.use(ctx), pytest.raises(NodeInputError) as info:
        CheckpointLoaderSimple().load_checkpoint("empty.safetensors")
    assert str(info.value) == "cannot read model file 'empty.safetensors': the file is truncated or corrupt"
    with context.use(ctx), pytest.raises(NodeInputError) as missing:
        CheckpointLoaderSimple().load_checkpoint("nope.safetensors")
    assert str(missing.value) == "model file 'nope.safetensors' is not in the checkpoints folder"


def test_device_residency_evicts_least_recently_used_modules_not_in_use() -> None:
    settings = DevicePolicy(torch.device("cpu"), torch.float32, torch.float32, device_budget=2 * 400, ram_budget=0)
    residency = DeviceResidency(settings)
    a, b, c = (torch.nn.Linear(10, 10, bias=False) for _ in range(3))  # 400 bytes each
    with residency.use(a):
        with residency.use(b):
            pass
        with residency.use(c):  # b is the least recently used module not in use
            assert residency.resident_bytes() == 800
    assert residency.resident_bytes() == 800
    with residency.use(b):
        assert residency.resident_bytes() == 800  # a (oldest, idle) made room


def test_the_unet_is_cast_as_it_is_read_and_the_text_encoders_keep_fp16(tiny_models: Path) -> None:  # noqa: F811
    model, clip, _ = load_checkpoint(tiny_models / SDXL)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float32}  # the CPU policy's UNet dtype
    assert {p.dtype for e in clip.encoders for p in e.module.parameters()} == {torch.float16}
