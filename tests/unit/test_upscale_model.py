"""The upscale model nodes: ComfyUI's catalog entries, spandrel loading (formats, refusals), ComfyUI's tiling and
its out-of-memory fallback, and the nodes end to end on the tiny models ``make-test-models`` writes.

``tests/data/comfyui_object_info/upscale_model.json`` holds the real ComfyUI's ``/object_info`` entries.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from comfyserve.engine import context
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.errors import ModelFileError
from comfyserve.models.testmodels import make_test_models
from comfyserve.models.testmodels_upscale import scale_from_name, tiny_upscale_model
from comfyserve.models.tiled_scale import tile_count, tile_starts, tiled_scale
from comfyserve.models.upscale_model import build_upscale_model, load_upscale_model, upscale_tiled
from comfyserve.nodes import builtin_registry
from comfyserve.nodes import upscale_model as nodes
from tests.unit.models_fixtures import tiny_models  # noqa: F401

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "comfyui_object_info" / "upscale_model.json").read_text()
)

NAMES = ["4x-UltraSharp.pth", "RealESRGAN_x8.pth", "nested/RealESRGAN_x4plus.safetensors"]


def model_file_inputs(info: dict[str, Any]) -> set[str]:
    """The inputs of an entry of ours that name model files (comfyserve marks their folder)."""
    return {
        name for declared in info["input"].values() for name, config in declared.items() if "model_folder" in config[-1]
    }


def _entry(info: dict[str, Any], file_inputs: set[str]) -> dict[str, Any]:
    """An entry less what differs by machine: a model-file input's options are the files there."""
    entry = copy.deepcopy({k: v for k, v in info.items() if k not in ("python_module", "comfyserve")})
    for declared in entry["input"].values():
        for name in file_inputs & set(declared):
            declared[name][1] = {k: v for k, v in declared[name][1].items() if k not in ("model_folder", "options")}
    return entry


def test_every_class_of_the_pack_has_comfyui_s_catalog_entry() -> None:
    ours = Catalog.from_registry(builtin_registry()).to_object_info()
    assert sorted(nodes.NODE_CLASS_MAPPINGS) == sorted(REFERENCE)
    for name, reference in REFERENCE.items():
        file_inputs = model_file_inputs(ours[name])
        assert _entry(ours[name], file_inputs) == _entry(reference, file_inputs), name
    assert model_file_inputs(ours["UpscaleModelLoader"]) == {"model_name"}


@pytest.mark.parametrize(
    ("name", "scale"),
    [("RealESRGAN_x8.pth", 8), ("4x-UltraSharp.pth", 4), ("sub/2x_Foo.safetensors", 2), ("1x-Denoise.pth", 1)],
)
def test_tiny_models_upscale_by_the_scale_their_name_states(name: str, scale: int) -> None:
    assert scale_from_name(name) == scale
    model = build_upscale_model(tiny_upscale_model(scale), Path(name))
    assert (model.architecture.id, model.scale) == ("ESRGAN", scale)
    out = model(torch.rand(1, 3, 6, 5))
    assert out.shape == (1, 3, 6 * scale, 5 * scale)


def test_spandrel_loads_while_torchvision_stays_absent() -> None:
    build_upscale_model(tiny_upscale_model(2), Path("x2.pth"))
    assert "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None


def test_a_scale_that_is_no_power_of_two_is_refused() -> None:
    with pytest.raises(ValueError, match="power of two, not 3"):
        tiny_upscale_model(3)


@given(st.integers(1, 3000), st.sampled_from([(512, 32), (256, 32), (128, 32), (16, 4)]))
def test_tiles_cover_the_side_as_comfyui_counts_them(length: int, tiling: tuple[int, int]) -> None:
    tile, overlap = tiling
    starts = tile_starts(length, tile, overlap)
    expected = 1 if length <= tile else math.ceil((length - overlap) / (tile - overlap))  # get_tiled_scale_steps
    assert len(starts) == expected == tile_count(length, 1, tile, overlap)
    assert starts[0] == 0 and min(length, starts[-1] + tile) == length
    assert all(b - a == tile - overlap for a, b in itertools.pairwise(starts))


def _nearest(scale: int) -> Any:
    return lambda x: x.repeat_interleave(scale, -1).repeat_interleave(scale, -2) * 0.5


def test_tiles_blend_back_into_the_whole_image_for_a_local_model() -> None:
    x = torch.rand(2, 3, 45, 70, generator=torch.Generator().manual_seed(0))
    whole = _nearest(2)(x)
    tiled = tiled_scale(x, _nearest(2), tile=24, overlap=6, scale=2)
    assert tiled.shape == (2, 3, 90, 140)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tiling_the_tiny_model_stays_close_to_running_it_whole() -> None:
    model = build_upscale_model(tiny_upscale_model(2), Path("x2.pth"))
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    whole = tiled_scale(x, model, tile=512, overlap=32, scale=2)
    tiled = tiled_scale(x, model, tile=32, overlap=16, scale=2)
    assert tiled.shape == whole.shape == (1, 3, 80, 112)
    difference = (tiled - whole).abs()
    assert float(difference.mean()) < 0.005 and float(difference.max()) < 0.15  # only near the seams
    assert float(whole.std()) > 0.05


def test_out_of_memory_halves_the_tile_down_to_128() -> None:
    x = torch.rand(1, 3, 300, 600)
    counts: list[int] = []
    tiles_done: list[int] = []

    def on_tiles(count: int) -> Any:
        counts.append(count)
        return lambda: tiles_done.append(count)

    def fits_256(tile: torch.Tensor) -> torch.Tensor:
        if max(tile.shape[-2:]) > 256:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return _nearest(1)(tile)

    out = upscale_tiled(fits_256, x, 1, on_tiles)
    torch.testing.assert_close(out, x * 0.5, rtol=0, atol=1e-6)
    assert counts == [2, 2 * 3] and tiles_done == [6] * 6  # 512: 1x2 tiles (the first fails), 256: 2x3 tiles

    def never_fits(_tile: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    counts.clear()
    with pytest.raises(torch.OutOfMemoryError):
        upscale_tiled(never_fits, x, 1, on_tiles)
    assert counts == [2, 6, 3 * 6]  # tiles of 512, 256 and 128, then it gives up


def test_pickled_layouts_load_as_comfyui_reads_them(tmp_path: Path) -> None:
    sd = tiny_upscale_model(4)
    files = {
        "params_ema.pth": {"params_ema": sd},  # Real-ESRGAN's releases: a lone wrapping entry
        "both.pth": {"params": tiny_upscale_model(4, seed=1), "params_ema": sd},  # spandrel takes params_ema
        "plain.pth": sd,
    }
    for name, value in files.items():
        torch.save(value, tmp_path / name)
    outputs = [load_upscale_model(tmp_path / name)(torch.full((1, 3, 4, 4), 0.3)) for name in files]
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a model", "cannot read model file 'bad.pth': the file is truncated or corrupt"),
        ({"weight": torch.zeros(2)}, "upscale model file 'bad.pth' is not of an architecture spandrel supports"),
        (
            {"model.model.1.bn_l.running_mean": torch.zeros(2)},
            "upscale model file 'bad.pth' is a LaMa model, which needs torchvision (not installed here)",
        ),
        (
            {k: v for k, v in tiny_upscale_model(4).items() if not k.startswith("conv_hr")},
            "cannot load upscale model file 'bad.pth': ",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "bad.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelFileError) as info:
        load_upscale_model(path)
    assert str(info.value).startswith(message)


def test_the_nodes_load_once_and_upscale_in_0_to_1(tiny_models: Path, tmp_path: Path) -> None:  # noqa: F811
    ctx = RunContext(tmp_path, tmp_path, tmp_path, models=ModelInventory.scan(tiny_models))
    image = torch.rand(2, 12, 9, 3, generator=torch.Generator().manual_seed(0))
    with context.use(ctx):
        (model,) = nodes.UpscaleModelLoader().load_model("RealESRGAN_x4plus.pth")
        (again,) = nodes.UpscaleModelLoader().load_model("RealESRGAN_x4plus.pth")
        (upscaled,) = nodes.ImageUpscaleWithModel().upscale(model, image)
        with pytest.raises(NodeInputError, match=r"'absent\.pth' is not in the upscale_models folder"):
            nodes.UpscaleModelLoader().load_model("absent.pth")
        with pytest.raises(NodeInputError, match=r"takes images of 3 channels .* got shape \[2, 12, 9, 4\]"):
            nodes.ImageUpscaleWithModel().upscale(model, torch.rand(2, 12, 9, 4))
    assert again is model
    assert upscaled.shape == (2, 48, 36, 3) and upscaled.dtype == torch.float32
    assert float(upscaled.min()) >= 0.0 and float(upscaled.max()) <= 1.0 and float(upscaled.std()) > 0.05
    torch.testing.assert_close(upscaled[1:], nodes.ImageUpscaleWithModel().upscale(model, image[1:])[0])


def test_make_test_models_writes_the_upscale_models_workflows_name(tmp_path: Path) -> None:
    workflow = tmp_path / "w.json"
    loaders = {str(i): {"class_type": "UpscaleModelLoader", "inputs": {"model_name": n}} for i, n in enumerate(NAMES)}
    workflow.write_text(json.dumps(loaders))
    written = make_test_models(tmp_path / "models", [workflow])
    assert [p.relative_to(tmp_path / "models").as_posix() for p in written] == [f"upscale_models/{n}" for n in NAMES]
    assert [load_upscale_model(p).scale for p in written] == [4, 8, 4]
    assert max(p.stat().st_size for p in written) < 2**20
