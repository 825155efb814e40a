"""``comfyserve make-test-models --comfyui``: one set of stand-ins that ComfyUI loads too, so a differential test
runs the same checkpoint, LoRA and VAE files through both backends and compares the images."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.testmodels import make_test_models
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES
from tests.comfyui_real.test_parity_real import assert_same, image, txt2img

CHECKPOINT = "tiny-sd15.safetensors"


@pytest.fixture(scope="module")
def stand_ins(model_root: Path) -> list[Path]:
    started = time.perf_counter()
    written = make_test_models(model_root, comfyui=True)
    FIGURES["make-test-models --comfyui (s)"] = time.perf_counter() - started
    return written


@pytest.fixture(scope="module")
def builtin(model_root: Path, stand_ins: list[Path]) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def test_the_stand_ins_are_the_sd1_set_and_readable_by_others(stand_ins: list[Path], model_root: Path) -> None:
    assert sorted(str(p.relative_to(model_root)) for p in stand_ins) == [
        "checkpoints/tiny-sd15.safetensors",
        "controlnet/tiny-sd15-controlnet.safetensors",
        "loras/tiny-sd15-lora.pth",
        "loras/tiny-sd15-lora.safetensors",
        "vae/tiny-vae.safetensors",
    ]
    assert {p.stat().st_mode & 0o777 for p in stand_ins} == {0o644}


def test_comfyui_and_the_builtin_engine_draw_the_same_image_from_them(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    prompt = txt2img("euler", "normal", checkpoint=CHECKPOINT)
    prompt["10"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "model": ["4", 0],
            "clip": ["4", 1],
            "lora_name": "tiny-sd15-lora.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
        },
    }
    prompt["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": "tiny-vae.safetensors"}}
    prompt["3"]["inputs"]["model"] = ["10", 0]
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["10", 1]
    prompt["8"]["inputs"]["vae"] = ["11", 0]
    theirs = image(backend, prompt, tmp_path / "comfyui")  # "Could not detect model type" before --comfyui
    ours = image(builtin, prompt, tmp_path / "builtin")
    assert theirs.shape == (64, 64, 3)
    assert_same("SD1.5 stand-in", "euler", "normal", theirs, ours)
