"""Differential parity of the split-file loaders: an SD1.5 stand-in ComfyUI loads (``make-test-models --comfyui``
resolving UNETLoader / CLIPLoader names from the workflow) run as a diffusion model, a text encoder and a VAE
from separate files gives the same image on ComfyUI and on the built-in engine (at most 1 of 255 apart), with
the default and an fp8 weight dtype; and on ComfyUI the split files give the image of the checkpoint they
were cut from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models import layout, testsplit
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import make_test_models, save, split_source
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES
from tests.comfyui_real.test_parity_real import image, txt2img

UNET = "parity-split/sd15-unet.safetensors"
CLIP = "parity-split-sd15-clip-l.safetensors"
VAE = "parity-split-sd15-vae.safetensors"
CHECKPOINT = "parity-split-sd15.safetensors"


def split_txt2img(weight_dtype: str) -> dict[str, Any]:
    prompt = txt2img("euler", "normal")
    del prompt["4"]
    prompt["1"] = {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": weight_dtype}}
    prompt["2"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": CLIP, "type": "stable_diffusion"}}
    prompt["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE}}
    prompt["3"]["inputs"]["model"] = ["1", 0]
    prompt["6"]["inputs"]["clip"] = prompt["7"]["inputs"]["clip"] = ["2", 0]
    prompt["8"]["inputs"]["vae"] = ["10", 0]
    return prompt


@pytest.fixture(scope="module")
def split_files(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The UNet and text encoder as make-test-models writes them for the workflow, and the checkpoint they are
    parts of with its VAE (written here: make-test-models' VAEs are independent of any checkpoint)."""
    workflow = tmp_path_factory.mktemp("split-workflow") / "split.json"
    workflow.write_text(json.dumps(split_txt2img("default")))
    written = make_test_models(model_root, [workflow], comfyui=True)
    checkpoint = split_source(ModelFamily.SD1, layout.COMFYUI_LOADABLE)
    save(testsplit.split_checkpoint(checkpoint, ModelFamily.SD1)["vae"], model_root / "vae" / VAE)
    save(checkpoint, model_root / "checkpoints" / CHECKPOINT)
    return written


@pytest.fixture(scope="module")
def builtin(model_root: Path, split_files: list[Path]) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def _max_diff(theirs: np.ndarray, ours: np.ndarray) -> float:
    assert theirs.shape == ours.shape == (64, 64, 3)
    return float(np.max(np.abs(theirs - ours)))


def test_make_test_models_wrote_the_workflow_s_split_files(split_files: list[Path], model_root: Path) -> None:
    assert sorted(p.relative_to(model_root).as_posix() for p in split_files) == [
        f"diffusion_models/{UNET}",
        f"text_encoders/{CLIP}",
        f"vae/{VAE}",
    ]


@pytest.mark.parametrize("weight_dtype", ["default", "fp8_e4m3fn"])
def test_split_files_draw_the_same_image_on_both_backends(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path, weight_dtype: str
) -> None:
    prompt = split_txt2img(weight_dtype)
    theirs = image(backend, prompt, tmp_path / "comfyui")
    ours = image(builtin, prompt, tmp_path / "builtin")
    diff = _max_diff(theirs, ours)
    FIGURES[f"parity split SD1.5 ({weight_dtype}): max abs diff"] = diff
    assert diff <= 1.0
    assert float(np.std(theirs)) > 1.0  # not a blank image on both sides


def test_on_comfyui_the_split_files_draw_the_checkpoint_s_image(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    prompt = txt2img("euler", "normal", checkpoint=CHECKPOINT)
    prompt["10"] = {"class_type": "VAELoader", "inputs": {"vae_name": VAE}}
    prompt["8"]["inputs"]["vae"] = ["10", 0]
    whole = image(backend, prompt, tmp_path / "checkpoint")
    split = image(backend, split_txt2img("default"), tmp_path / "split")
    ours = image(builtin, prompt, tmp_path / "builtin")
    FIGURES["parity split SD1.5: ComfyUI checkpoint vs split, max abs diff"] = _max_diff(whole, split)
    assert _max_diff(whole, split) == 0.0
    assert _max_diff(whole, ours) <= 1.0
