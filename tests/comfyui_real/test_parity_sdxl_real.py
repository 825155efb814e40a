"""Differential parity for SDXL (published widths, random weights), every offered sampler. Both engines hold a
~10 GB fp32 UNet on the CPU, so they run one after the other and neither in the test process: ComfyUI first
(then stopped), then the built-in engine through ``comfyserve run`` in a child process; the checkpoint is written
by a child process too. Each engine runs one workflow with a branch per sampler, so it loads the model once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import write_full_size_checkpoint
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.test_parity_real import SAMPLERS, assert_same, pixels, txt2img

CHECKPOINT = "parity-sdxl.safetensors"
Images = dict[tuple[str, str], np.ndarray]


def every_sampler() -> dict[str, Any]:
    """One prompt: the shared loader, prompts and latent, then KSampler → VAEDecode → SaveImage per sampler
    (node ids 100+i, 200+i, 300+i; file prefix ``sdxl_<i>``)."""
    shared = txt2img("euler", "normal", CHECKPOINT)
    prompt = {key: shared[key] for key in ("4", "5", "6", "7")}
    for index, (sampler, scheduler) in enumerate(SAMPLERS):
        prompt[str(100 + index)] = txt2img(sampler, scheduler, CHECKPOINT)["3"]
        prompt[str(200 + index)] = {
            "class_type": "VAEDecode",
            "inputs": {"samples": [str(100 + index), 0], "vae": ["4", 2]},
        }
        prompt[str(300 + index)] = {
            "class_type": "SaveImage",
            "inputs": {"images": [str(200 + index), 0], "filename_prefix": f"sdxl_{index}"},
        }
    return prompt


def comfyui_images(backend: ComfyUIBackend, work: Path) -> Images:
    result = backend.run(BackendJob(job_id="parity-sdxl", prompt=every_sampler(), work_dir=work))
    assert result.status == "success", result.error
    by_node = {output.node_id: output.path for output in result.outputs}
    return {pair: pixels(by_node[str(300 + index)]) for index, pair in enumerate(SAMPLERS)}


def builtin_images(model_root: Path, work: Path) -> Images:
    work.mkdir(parents=True, exist_ok=True)
    workflow = work / "every-sampler.json"
    workflow.write_text(json.dumps(every_sampler()))
    out = work / "out"
    argv = [sys.executable, "-m", "comfyserve", "run", str(workflow), "--out", str(out), "--models", str(model_root)]
    subprocess.run(argv, check=True, capture_output=True, timeout=1500)
    images = {}
    for index, pair in enumerate(SAMPLERS):
        (png,) = sorted(out.glob(f"sdxl_{index}_*.png"))
        images[pair] = pixels(png)
    return images


@pytest.fixture(scope="module")
def both(
    backend: ComfyUIBackend, model_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Images, Images]]:
    """(ComfyUI's, ours): the images of every sampler, each engine alone in memory while it runs."""
    work = tmp_path_factory.mktemp("parity-sdxl")
    path = model_root / "checkpoints" / CHECKPOINT
    write_full_size_checkpoint(ModelFamily.SDXL, path)
    try:
        backend.close()  # a fresh ComfyUI: nothing else held in memory
        theirs = comfyui_images(backend, work / "comfyui")
        backend.close()  # its memory back before the built-in engine loads the same model
        ours = builtin_images(model_root, work / "builtin")
    finally:
        path.unlink(missing_ok=True)
    yield theirs, ours


@pytest.mark.timeout(3600)  # two engines loading a full-width SDXL and running 42 samplers on 2 CPU cores
@pytest.mark.parametrize(("sampler", "scheduler"), SAMPLERS)
def test_sdxl_same_image_on_both_backends(both: tuple[Images, Images], sampler: str, scheduler: str) -> None:
    theirs, ours = both
    assert_same("SDXL", sampler, scheduler, theirs[(sampler, scheduler)], ours[(sampler, scheduler)])
