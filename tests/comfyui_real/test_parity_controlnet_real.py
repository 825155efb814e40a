"""Differential parity of the ControlNet nodes: the same workflow and seed through the built-in engine and
through ComfyUI give the same image (max abs diff <= 1 on 8-bit pixels).

The models are ``make-test-models --comfyui`` stand-ins written for the workflow itself: the smallest SD1.5
checkpoint ComfyUI loads and an LDM-layout ControlNet of the same widths (``control_model.*`` keys, as
lllyasviel's). One prompt holds three branches: ControlNetApplyAdvanced over part of the run, two chained
ControlNetApplyAdvanced with different hints and ranges, and the deprecated ControlNetApply (positive only, which
sampling hands to the negative side). The hint is a non-square image, so the centre crop and the nearest-exact
resize to the latent size × 8 are exercised; the latent batch is 3, and the chained branch's second hint is a
batch of 2 (repeated to the latents: 0, 1, 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.testmodels import make_test_models
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES
from tests.comfyui_real.test_parity_real import pixels

CHECKPOINT = "parity-cn-sd15.safetensors"
CONTROLNET = "parity-cn-sd15-scribble.safetensors"
HINT = "hint.png"
BRANCHES = ("advanced", "chained", "old")
BATCH = 3


def _sampler(positive: list[Any], negative: list[Any]) -> dict[str, Any]:
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": ["4", 0],
            "positive": positive,
            "negative": negative,
            "latent_image": ["5", 0],
            "seed": 7,
            "steps": 5,
            "cfg": 6.0,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 1.0,
        },
    }


def _apply(positive: list[Any], negative: list[Any], image: str, strength: float, start: float, end: float) -> Any:
    return {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": positive,
            "negative": negative,
            "control_net": ["20", 0],
            "image": [image, 0],
            "strength": strength,
            "start_percent": start,
            "end_percent": end,
        },
    }


def controlnet_prompt() -> dict[str, Any]:
    prompt: dict[str, Any] = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": BATCH}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red fox in the snow"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
        "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}},
        "21": {"class_type": "LoadImage", "inputs": {"image": HINT}},
        "22": {"class_type": "ImageInvert", "inputs": {"image": ["21", 0]}},
        "23": {"class_type": "ImageBatch", "inputs": {"image1": ["21", 0], "image2": ["22", 0]}},
        # advanced: the first 60 % of the run
        "30": _apply(["6", 0], ["7", 0], "21", 0.9, 0.0, 0.6),
        # chained: a second ControlNet onto the first, from 30 % to the end, with a batch of two hints (the hint
        # and its inverse) for the three latents
        "40": _apply(["30", 0], ["30", 1], "23", 0.5, 0.3, 1.0),
        # old: positive only
        "50": {
            "class_type": "ControlNetApply",
            "inputs": {"conditioning": ["6", 0], "control_net": ["20", 0], "image": ["21", 0], "strength": 0.8},
        },
        "31": _sampler(["30", 0], ["30", 1]),
        "41": _sampler(["40", 0], ["40", 1]),
        "51": _sampler(["50", 0], ["7", 0]),
    }
    for index, (branch, sampler) in enumerate(zip(BRANCHES, ("31", "41", "51"), strict=True)):
        prompt[str(60 + index)] = {"class_type": "VAEDecode", "inputs": {"samples": [sampler, 0], "vae": ["4", 2]}}
        prompt[str(70 + index)] = {
            "class_type": "SaveImage",
            "inputs": {"images": [str(60 + index), 0], "filename_prefix": f"cn_{branch}"},
        }
    return prompt


def _hint(path: Path) -> Path:
    """An 80×48 scribble: dark background, light strokes (the latent is 64×64, so it is cropped and resized)."""
    rows, cols = np.mgrid[0:48, 0:80]
    strokes = (np.abs(rows - 24 - 12 * np.sin(cols / 9)) < 2) | (np.abs(cols - 40) < 2) | ((rows + cols) % 23 < 2)
    values = np.where(strokes, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([values, values // 2, 255 - values], axis=-1)).save(path)
    return path


@pytest.fixture(scope="module")
def models(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stand-ins the workflow names, written by ``make-test-models --comfyui`` into ComfyUI's model root."""
    workflow = tmp_path_factory.mktemp("controlnet") / "workflow.json"
    workflow.write_text(json.dumps(controlnet_prompt()))
    written = make_test_models(model_root, [workflow], comfyui=True)
    assert sorted(p.relative_to(model_root).as_posix() for p in written) == [
        f"checkpoints/{CHECKPOINT}",
        f"controlnet/{CONTROLNET}",
    ]
    return model_root


@pytest.fixture(scope="module")
def builtin(models: Path) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(models))
    backend.start()
    yield backend
    backend.close()


def _images(backend: Any, work: Path, hint: Path) -> dict[str, np.ndarray]:
    """Each branch's batch of images, ``[BATCH, 64, 64, 3]``."""
    job = BackendJob(job_id=f"controlnet-{work.name}", prompt=controlnet_prompt(), work_dir=work, inputs={HINT: hint})
    result = backend.run(job)
    assert result.status == "success", result.error
    by_node: dict[str, list[Path]] = {}
    for output in result.outputs:
        by_node.setdefault(output.node_id, []).append(output.path)
    return {
        branch: np.stack([pixels(path) for path in sorted(by_node[str(70 + index)])])
        for index, branch in enumerate(BRANCHES)
    }


def test_controlnet_workflows_give_the_same_images(
    backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path
) -> None:
    hint = _hint(tmp_path / HINT)
    theirs = _images(backend, tmp_path / "comfyui", hint)
    ours = _images(builtin, tmp_path / "builtin", hint)
    for branch in BRANCHES:
        assert theirs[branch].shape == ours[branch].shape == (BATCH, 64, 64, 3)
        difference = float(np.max(np.abs(theirs[branch] - ours[branch])))
        FIGURES[f"parity SD1.5 ControlNet {branch}: max abs diff"] = difference
        assert difference <= 1.0, branch
        assert float(np.std(theirs[branch])) > 1.0, branch  # not a blank image on both sides
    # the ControlNet changed the image: the branches differ from each other
    assert float(np.max(np.abs(theirs["advanced"] - theirs["chained"]))) > 8.0
    assert float(np.max(np.abs(theirs["advanced"] - theirs["old"]))) > 8.0
