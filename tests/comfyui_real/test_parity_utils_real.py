"""Differential parity of the model-free utility nodes: the same image/mask workflows through the built-in engine
and through ComfyUI save identical pixels, and Preview Any shows the same text."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyserve.engine.inventory import ModelInventory
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.test_parity_real import pixels


@pytest.fixture(scope="module")
def builtin(model_root: Path) -> Iterator[BuiltinBackend]:
    backend = BuiltinBackend(models=ModelInventory.scan(model_root))
    backend.start()
    yield backend
    backend.close()


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def transform_prompt(direction: str, rotation: str, flip: str, method: str, operation: str) -> dict[str, Any]:
    """Two solid images stitched (sizes differ, a coloured spacer), turned, flipped, a feathered and grown mask
    cut from it composited over a third, resized to a pixel budget, repeated and picked from; the mask also
    thresholded and combined back into itself at an offset."""
    return {
        "1": _node("EmptyImage", width=8, height=5, batch_size=1, color=0xFF2000),
        "2": _node("EmptyImage", width=3, height=9, batch_size=1, color=0x1040C0),
        "3": _node(
            "ImageStitch",
            image1=["1", 0],
            image2=["2", 0],
            direction=direction,
            match_image_size=False,
            spacing_width=2,
            spacing_color="green",
        ),
        "4": _node("ImageRotate", image=["3", 0], rotation=rotation),
        "5": _node("ImageFlip", image=["4", 0], flip_method=flip),
        "6": _node("ImageToMask", image=["5", 0], channel="red"),
        "7": _node("GrowMask", mask=["6", 0], expand=1, tapered_corners=True),
        "8": _node("FeatherMask", mask=["7", 0], left=2, top=1, right=3, bottom=0),
        "9": _node("EmptyImage", width=16, height=16, batch_size=2, color=0x808080),
        "10": _node(
            "ImageCompositeMasked", destination=["9", 0], source=["5", 0], x=3, y=2, resize_source=False, mask=["8", 0]
        ),
        "11": _node("ImageScaleToTotalPixels", image=["10", 0], upscale_method=method, megapixels=0.01),
        "12": _node("RepeatImageBatch", image=["11", 0], amount=2),
        "13": _node("ImageFromBatch", image=["12", 0], batch_index=1, length=1),
        "14": _node("ImageScaleToMaxDimension", image=["13", 0], upscale_method="bicubic", largest_size=20),
        "15": _node("ThresholdMask", mask=["8", 0], value=0.4),
        "19": _node("MaskComposite", destination=["8", 0], source=["15", 0], x=1, y=2, operation=operation),
        "16": _node("MaskToImage", mask=["19", 0]),
        "17": _node(
            "ImageStitch",
            image1=["14", 0],
            image2=["16", 0],
            direction="down",
            match_image_size=True,
            spacing_width=0,
            spacing_color="white",
        ),
        "18": _node("SaveImage", images=["17", 0], filename_prefix="utils"),
    }


def run(backend: Any, prompt: dict[str, Any], work_dir: Path) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def sink(name: str, data: dict[str, Any]) -> None:
        if name == "executed":
            events.append(data["output"])

    job = BackendJob(job_id=f"utils-{time.monotonic_ns()}", prompt=prompt, work_dir=work_dir, on_event=sink)
    result = backend.run(job)
    assert result.status == "success", result.error
    return [pixels(o.path) for o in sorted(result.outputs, key=lambda o: o.path.name)], events


@pytest.mark.parametrize(
    ("direction", "rotation", "flip", "method", "operation"),
    [
        ("right", "90 degrees", "x-axis: vertically", "lanczos", "xor"),
        ("up", "270 degrees", "y-axis: horizontally", "bilinear", "subtract"),
        ("left", "180 degrees", "x-axis: vertically", "area", "add"),
    ],
)
def test_image_and_mask_utilities_save_the_same_pixels(
    backend: ComfyUIBackend,
    builtin: BuiltinBackend,
    direction: str,
    rotation: str,
    flip: str,
    method: str,
    operation: str,
    tmp_path: Path,
) -> None:
    prompt = transform_prompt(direction, rotation, flip, method, operation)
    theirs, _ = run(backend, prompt, tmp_path / "comfyui")
    ours, _ = run(builtin, prompt, tmp_path / "builtin")
    assert [t.shape for t in theirs] == [o.shape for o in ours] and theirs
    assert max(float(np.max(np.abs(t - o))) for t, o in zip(theirs, ours, strict=True)) <= 1.0
    assert float(np.std(theirs[0])) > 1.0  # not a flat image on both sides


def test_preview_any_shows_the_same_text(backend: ComfyUIBackend, builtin: BuiltinBackend, tmp_path: Path) -> None:
    prompt = {
        "1": _node("EmptyImage", width=7, height=3, batch_size=2, color=0),
        "2": _node("GetImageSize", image=["1", 0]),
        "3": _node("StringConcatenate", string_a="size", string_b="x", delimiter=": "),
        "4": _node("PreviewAny", source=["2", 0]),
        "5": _node("PreviewAny", source=["3", 0]),
        "6": _node("PreviewAny", source=["2", 2]),
    }
    _, theirs = run(backend, prompt, tmp_path / "comfyui")
    _, ours = run(builtin, prompt, tmp_path / "builtin")
    expected = [{"text": ["7"]}, {"text": ["size: x"]}, {"text": ["2"]}]
    as_sent = [sorted(json.dumps(output) for output in outputs) for outputs in (theirs, ours, expected)]
    assert as_sent[0] == as_sent[1] == as_sent[2]
