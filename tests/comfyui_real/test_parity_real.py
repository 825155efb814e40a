"""Differential parity: the same workflow and seed through the built-in engine and through ComfyUI give the same
image (PSNR >= 50 dB), on a random-weight checkpoint with the published SD1.5 widths and key layout (ComfyUI
detects it as SD1.5; both engines read the same file)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models import testmodels
from comfyserve.models.handles import ModelFamily
from comfyserve.models.sampling.samplers import SAMPLER_NAMES
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES

CHECKPOINT = "parity-sd15.safetensors"
FIGURE = "parity {family} {sampler}/{scheduler}: {what}"
# Every sampler the built-in engine offers (ComfyUI's names), under the normal schedule; dpmpp_2m under karras.
SAMPLERS = [("dpmpp_2m", "karras")] + [(name, "normal") for name in SAMPLER_NAMES if name != "dpmpp_2m"]


@pytest.fixture(scope="module")
def sd15(model_root: Path) -> Path:
    """A full-width SD1.5 checkpoint with random weights, written into the model root ComfyUI lists."""
    path = model_root / "checkpoints" / CHECKPOINT
    write_checkpoint(ModelFamily.SD1, path)
    return path


@pytest.fixture(scope="module")
def builtin(model_root: Path, sd15: Path) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def write_checkpoint(family: ModelFamily, path: Path) -> None:
    """A random checkpoint of ``family`` with its published widths and key layout."""
    started = time.perf_counter()
    testmodels.save(testmodels.full_size_checkpoint(family), path)
    FIGURES[f"parity: writing the {family.value}-width checkpoint (s)"] = time.perf_counter() - started


def txt2img(sampler: str, scheduler: str, checkpoint: str = CHECKPOINT) -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red fox in the snow"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
                "seed": 42,
                "steps": 4,
                "cfg": 7.0,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "denoise": 1.0,
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "parity"}},
    }


def image(backend: Any, prompt: dict[str, Any], work_dir: Path) -> np.ndarray:
    result = backend.run(BackendJob(job_id=f"parity-{time.monotonic_ns()}", prompt=prompt, work_dir=work_dir))
    assert result.status == "success", result.error
    (output,) = result.outputs
    return pixels(output.path)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"), dtype=np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@pytest.mark.parametrize(("sampler", "scheduler"), SAMPLERS)
def test_sd15_same_image_on_both_backends(
    backend: ComfyUIBackend, builtin: BuiltinBackend, sampler: str, scheduler: str, tmp_path: Path
) -> None:
    prompt = txt2img(sampler, scheduler)
    theirs = image(backend, prompt, tmp_path / "comfyui")
    ours = image(builtin, prompt, tmp_path / "builtin")
    assert theirs.shape == (64, 64, 3)
    assert_same("SD1.5", sampler, scheduler, theirs, ours)


def assert_same(family: str, sampler: str, scheduler: str, theirs: np.ndarray, ours: np.ndarray) -> None:
    assert theirs.shape == ours.shape
    value = psnr(theirs, ours)
    names = {"family": family, "sampler": sampler, "scheduler": scheduler}
    FIGURES[FIGURE.format(**names, what="PSNR (dB)")] = min(value, 999.0)
    FIGURES[FIGURE.format(**names, what="max abs diff")] = float(np.max(np.abs(theirs - ours)))
    assert value >= 50.0
    assert float(np.std(theirs)) > 1.0  # not a blank image on both sides
