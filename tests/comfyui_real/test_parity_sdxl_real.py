"""Differential parity for SDXL (published widths, random weights). Both engines hold a ~10 GB fp32 UNet on the
CPU, so they run one after the other and neither in the test process: ComfyUI first (then stopped), then the
built-in engine through ``comfyserve run`` in a child process; the checkpoint is written by a child process too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.test_parity_real import SAMPLERS, assert_same, image, txt2img

CHECKPOINT = "parity-sdxl.safetensors"
WRITE = (
    "import sys; from pathlib import Path; from comfyserve.models.handles import ModelFamily;"
    "from tests.comfyui_real.test_parity_real import write_checkpoint;"
    "write_checkpoint(ModelFamily.SDXL, Path(sys.argv[1]))"
)


def builtin_image(model_root: Path, sampler: str, scheduler: str, work: Path) -> Path:
    workflow = work / f"{sampler}.json"
    workflow.parent.mkdir(parents=True, exist_ok=True)
    workflow.write_text(json.dumps(txt2img(sampler, scheduler, CHECKPOINT)))
    out = work / f"out-{sampler}"
    argv = [sys.executable, "-m", "comfyserve", "run", str(workflow), "--out", str(out), "--models", str(model_root)]
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    (png,) = sorted(out.glob("parity_*.png"))
    return png


@pytest.mark.timeout(1800)  # two engines loading and running a full-width SDXL on 2 CPU cores, one at a time
def test_sdxl_same_image_on_both_backends(backend: ComfyUIBackend, model_root: Path, tmp_path: Path) -> None:
    path = model_root / "checkpoints" / CHECKPOINT
    subprocess.run([sys.executable, "-c", WRITE, str(path)], check=True, timeout=900)
    try:
        backend.close()  # a fresh ComfyUI: nothing else held in memory
        theirs = {
            pair: image(backend, txt2img(*pair, checkpoint=CHECKPOINT), tmp_path / f"c-{pair[0]}") for pair in SAMPLERS
        }
        backend.close()  # its memory back before the built-in engine loads the same model
        ours: dict[tuple[str, str], np.ndarray] = {}
        for sampler, scheduler in SAMPLERS:
            with Image.open(builtin_image(model_root, sampler, scheduler, tmp_path / "builtin")) as png:
                ours[(sampler, scheduler)] = np.asarray(png.convert("RGB"), dtype=np.float64)
    finally:
        path.unlink(missing_ok=True)
    for (sampler, scheduler), theirs_image in theirs.items():
        assert_same("SDXL", sampler, scheduler, theirs_image, ours[(sampler, scheduler)])
