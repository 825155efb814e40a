"""Differential parity of the upscale model nodes: the same tiny random-weight RRDBNet files (``make-test-models``'
layout) upscale the same noise image to the same pixels through the built-in engine and through ComfyUI, whole
and in ComfyUI's 512-pixel tiles, and both refuse a damaged file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.testmodels import save
from comfyserve.models.testmodels_upscale import tiny_upscale_model
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES
from tests.comfyui_real.test_parity_real import pixels

X4 = "parity-4x-RealESRGAN.pth"  # Real-ESRGAN's release layout: {"params_ema": state dict}
X2 = "parity-2x.safetensors"
BROKEN = "parity-broken.pth"


@pytest.fixture(scope="module")
def builtin(model_root: Path) -> Iterator[BuiltinBackend]:
    folder = model_root / "upscale_models"
    folder.mkdir(exist_ok=True)
    torch.save({"params_ema": tiny_upscale_model(4, seed=7)}, folder / X4)
    save(tiny_upscale_model(2, seed=8), folder / X2)
    (folder / BROKEN).write_bytes(b"\x80\x02not a pickle at all")
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def _noise(path: Path, width: int, height: int) -> Path:
    rng = np.random.default_rng(width * 1000 + height)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def upscale_prompt(model_name: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "noise.png"}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "3": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "upscaled"}},
    }


def run(backend: Any, model_name: str, image: Path, work_dir: Path) -> BackendResult:
    job = BackendJob(
        job_id=f"upscale-{time.monotonic_ns()}",
        prompt=upscale_prompt(model_name),
        work_dir=work_dir,
        inputs={"noise.png": image},
    )
    return backend.run(job)


@pytest.mark.parametrize(
    ("model_name", "width", "height", "scale"),
    [
        (X4, 40, 24, 4),  # one tile
        (X2, 600, 72, 2),  # two tiles across (0 and 480), blended over 64 output pixels
    ],
)
def test_upscaling_saves_the_same_pixels(
    backend: ComfyUIBackend,
    builtin: BuiltinBackend,
    model_name: str,
    width: int,
    height: int,
    scale: int,
    tmp_path: Path,
) -> None:
    image = _noise(tmp_path / "noise.png", width, height)
    theirs_run = run(backend, model_name, image, tmp_path / "comfyui")
    ours_run = run(builtin, model_name, image, tmp_path / "builtin")
    assert theirs_run.status == "success", theirs_run.error
    assert ours_run.status == "success", ours_run.error
    theirs, ours = pixels(theirs_run.outputs[0].path), pixels(ours_run.outputs[0].path)
    assert theirs.shape == ours.shape == (height * scale, width * scale, 3)
    difference = float(np.max(np.abs(theirs - ours)))
    FIGURES[f"upscale {model_name} {width}x{height}: max abs pixel difference"] = difference
    assert difference <= 1.0
    assert float(np.std(theirs)) > 10.0  # a textured image on both sides, not a clamped flat one


def test_a_damaged_file_fails_on_both_and_ours_names_it(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    image = _noise(tmp_path / "noise.png", 8, 8)
    theirs = run(backend, BROKEN, image, tmp_path / "comfyui")
    ours = run(builtin, BROKEN, image, tmp_path / "builtin")
    assert theirs.status == ours.status == "error"
    assert theirs.error is not None and ours.error is not None
    assert (theirs.error.node_id, ours.error.node_id) == ("2", "2")
    assert ours.error.message == f"cannot read model file '{BROKEN}': the file is truncated or corrupt"
