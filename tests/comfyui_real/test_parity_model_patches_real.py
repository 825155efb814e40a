"""Differential parity of the model-patch and conditioning nodes: the same workflow and seed through the built-in
engine and through ComfyUI save the same image (max abs difference <= 1 on 8-bit pixels).

SD1.5 at its published widths (FreeU acts on the blocks 2x and 4x as wide as the first, which the 320-wide
checkpoint of ``test_parity_real`` lacks), 128x128 (at 64x64 the deepest blocks are 1x1, where FreeU_V2's
min-max normalisation divides 0 by 0 in both engines): RescaleCFG + FreeU_V2 under KSampler, FreeU with
DualCFGGuider, DualCFGGuider in both styles with RescaleCFG and with a cfg of 1. Canny on a model-free image.
SDXL (full width, as ``test_parity_sdxl_real``, each engine alone in memory): CLIPTextEncodeSDXL with size, crop
and target conditioning and prompts of different window counts, with and without FreeU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from comfyserve.engine.inventory import ModelInventory
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import write_full_size_checkpoint
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.comfyui_real.conftest import FIGURES
from tests.comfyui_real.test_parity_custom_sampling_real import _base
from tests.comfyui_real.test_parity_real import assert_same, image, pixels

SDXL_CHECKPOINT = "parity-patches-sdxl.safetensors"
SD15_FULL = "parity-patches-sd15-full.safetensors"
LONG_PROMPT = ", ".join(f"a detailed painting of a red fox number {i} in deep winter snow" for i in range(8))


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def assert_pixels_match(name: str, theirs: np.ndarray, ours: np.ndarray) -> None:
    assert_same("patches", name, "-", theirs, ours)
    difference = float(np.max(np.abs(theirs - ours)))
    FIGURES[f"parity patches {name}: max abs diff"] = difference
    assert difference <= 1.0


def _sd15_base() -> dict[str, Any]:
    return {
        **_base(),
        "4": _node("CheckpointLoaderSimple", ckpt_name=SD15_FULL),
        "5": _node("EmptyLatentImage", width=128, height=128, batch_size=1),
    }


def rescale_freeu_v2() -> dict[str, Any]:
    """KSampler on FreeU_V2(RescaleCFG(model))."""
    return {
        **_sd15_base(),
        "10": _node("RescaleCFG", model=["4", 0], multiplier=0.7),
        "11": _node("FreeU_V2", model=["10", 0], b1=1.3, b2=1.4, s1=0.9, s2=0.2),
        "3": _node(
            "KSampler",
            model=["11", 0],
            positive=["6", 0],
            negative=["7", 0],
            latent_image=["5", 0],
            seed=42,
            steps=4,
            cfg=7.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        ),
    }


def _dual(style: str, model: list[Any], cfg_conds: float, cfg_negative: float, sampler: str) -> dict[str, Any]:
    return {
        **_sd15_base(),
        "12": _node("CLIPTextEncode", clip=["4", 1], text="an oil painting"),
        "13": _node(
            "DualCFGGuider",
            model=model,
            cond1=["6", 0],
            cond2=["12", 0],
            negative=["7", 0],
            cfg_conds=cfg_conds,
            cfg_cond2_negative=cfg_negative,
            style=style,
        ),
        "14": _node("RandomNoise", noise_seed=7),
        "15": _node("KSamplerSelect", sampler_name=sampler),
        "16": _node("BasicScheduler", model=["4", 0], scheduler="normal", steps=4, denoise=1.0),
        "3": _node(
            "SamplerCustomAdvanced",
            noise=["14", 0],
            guider=["13", 0],
            sampler=["15", 0],
            sigmas=["16", 0],
            latent_image=["5", 0],
        ),
    }


def dual_cfg_regular_freeu() -> dict[str, Any]:
    """DualCFGGuider (regular) on FreeU(model), euler."""
    prompt = _dual("regular", ["10", 0], 5.0, 3.0, "euler")
    prompt["10"] = _node("FreeU", model=["4", 0], b1=1.1, b2=1.2, s1=0.9, s2=0.2)
    return prompt


def dual_cfg_nested_rescale() -> dict[str, Any]:
    """DualCFGGuider (nested) on RescaleCFG(model), the CFG++ sampler (which reads the guider's uncond)."""
    prompt = _dual("nested", ["10", 0], 4.0, 2.0, "euler_cfg_pp")
    prompt["10"] = _node("RescaleCFG", model=["4", 0], multiplier=0.7)
    return prompt


def dual_cfg_regular_cfg1() -> dict[str, Any]:
    """DualCFGGuider (regular) with cfg_cond2_negative 1: the negative is skipped."""
    return _dual("regular", ["4", 0], 6.0, 1.0, "dpmpp_2m")


@pytest.fixture(scope="module")
def sd15_full(model_root: Path) -> Iterator[Path]:
    """A random SD1.5 checkpoint at the published widths (320, 640, 1280, 1280), removed afterwards."""
    path = model_root / "checkpoints" / SD15_FULL
    write_full_size_checkpoint(ModelFamily.SD1, path)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def both_sd15(model_root: Path, sd15_full: Path) -> Iterator[BuiltinBackend]:
    """The built-in engine with the full-width SD1.5 in its inventory."""
    engine = BuiltinBackend(models=ModelInventory.scan(model_root))
    engine.start()
    yield engine
    engine.close()


@pytest.mark.timeout(1200)  # loading the full-width SD1.5 on 2 CPU cores
@pytest.mark.parametrize(
    "workflow",
    [rescale_freeu_v2, dual_cfg_regular_freeu, dual_cfg_nested_rescale, dual_cfg_regular_cfg1],
    ids=lambda fn: fn.__name__,
)
def test_patched_sd15_same_image_on_both_backends(
    backend: ComfyUIBackend, both_sd15: BuiltinBackend, workflow: Any, tmp_path: Path
) -> None:
    prompt = workflow()
    theirs = image(backend, prompt, tmp_path / "comfyui")
    ours = image(both_sd15, prompt, tmp_path / "builtin")
    assert theirs.shape == (128, 128, 3)
    assert_pixels_match(workflow.__name__, theirs, ours)


def test_the_patches_change_the_full_width_image(both_sd15: BuiltinBackend, tmp_path: Path) -> None:
    """Without RescaleCFG and FreeU_V2 the same KSampler run gives another image (the patches act)."""
    patched = rescale_freeu_v2()
    plain = {**patched, "3": {**patched["3"], "inputs": {**patched["3"]["inputs"], "model": ["4", 0]}}}
    difference = np.abs(image(both_sd15, patched, tmp_path / "a") - image(both_sd15, plain, tmp_path / "b"))
    assert float(difference.max()) > 10


def canny_prompt(low: float, high: float) -> dict[str, Any]:
    """Canny on blurred coloured rectangles composited through a feathered mask."""
    return {
        "1": _node("EmptyImage", width=48, height=40, batch_size=2, color=0x204080),
        "2": _node("EmptyImage", width=20, height=16, batch_size=1, color=0xF0C020),
        "3": _node("SolidMask", value=1.0, width=20, height=16),
        "4": _node("FeatherMask", mask=["3", 0], left=4, top=0, right=2, bottom=3),
        "5": _node(
            "ImageCompositeMasked", destination=["1", 0], source=["2", 0], x=9, y=11, resize_source=False, mask=["4", 0]
        ),
        "6": _node("ImageBlur", image=["5", 0], blur_radius=2, sigma=1.0),
        "7": _node("Canny", image=["6", 0], low_threshold=low, high_threshold=high),
        "8": _node("SaveImage", images=["7", 0], filename_prefix="canny"),
    }


@pytest.mark.parametrize(("low", "high"), [(0.4, 0.8), (0.05, 0.2), (0.3, 0.3)])
def test_canny_same_image_on_both_backends(
    backend: ComfyUIBackend,
    both_sd15: BuiltinBackend,
    low: float,
    high: float,
    tmp_path: Path,
) -> None:
    prompt = canny_prompt(low, high)
    theirs = _images(backend, prompt, tmp_path / "comfyui")
    ours = _images(both_sd15, prompt, tmp_path / "builtin")
    assert len(theirs) == len(ours) == 2
    for theirs_image, ours_image in zip(theirs, ours, strict=True):
        assert theirs_image.shape == (40, 48, 3)
        assert np.array_equal(theirs_image, ours_image)
    assert any(np.any(edges > 0) for edges in theirs)  # some edges were found


def _images(backend: Any, prompt: dict[str, Any], work_dir: Path) -> list[np.ndarray]:
    result = backend.run(BackendJob(job_id=f"canny-{work_dir.name}", prompt=prompt, work_dir=work_dir))
    assert result.status == "success", result.error
    return [pixels(output.path) for output in sorted(result.outputs, key=lambda output: output.path.name)]


# -- SDXL ------------------------------------------------------------------------------------------------------


def sdxl_prompt() -> dict[str, Any]:
    """CLIPTextEncodeSDXL prompts (text_g two windows, text_l one; the negative the other way round) with size,
    crop and target conditioning; KSampler on the model (``sdxl_plain``) and on FreeU(model) (``sdxl_freeu``)."""
    sizes = {"width": 1024, "height": 896, "crop_w": 64, "crop_h": 32, "target_width": 768, "target_height": 640}
    prompt = {
        "4": _node("CheckpointLoaderSimple", ckpt_name=SDXL_CHECKPOINT),
        "5": _node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "6": _node("CLIPTextEncodeSDXL", clip=["4", 1], **sizes, text_g=LONG_PROMPT, text_l="a red fox"),
        "7": _node("CLIPTextEncodeSDXL", clip=["4", 1], **{**sizes, "crop_w": 0}, text_g="blurry", text_l=LONG_PROMPT),
        "10": _node("FreeU", model=["4", 0], b1=1.3, b2=1.4, s1=0.9, s2=0.2),
    }
    for name, model, index in (("sdxl_plain", ["4", 0], 0), ("sdxl_freeu", ["10", 0], 1)):
        prompt[str(20 + index)] = _node(
            "KSampler",
            model=model,
            positive=["6", 0],
            negative=["7", 0],
            latent_image=["5", 0],
            seed=42,
            steps=3,
            cfg=6.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        )
        prompt[str(30 + index)] = _node("VAEDecode", samples=[str(20 + index), 0], vae=["4", 2])
        prompt[str(40 + index)] = _node("SaveImage", images=[str(30 + index), 0], filename_prefix=name)
    return prompt


SDXL_OUTPUTS = ("sdxl_plain", "sdxl_freeu")


def _sdxl_comfyui(backend: ComfyUIBackend, work: Path) -> dict[str, np.ndarray]:
    result = backend.run(BackendJob(job_id="parity-patches-sdxl", prompt=sdxl_prompt(), work_dir=work))
    assert result.status == "success", result.error
    by_node = {output.node_id: output.path for output in result.outputs}
    return {name: pixels(by_node[str(40 + index)]) for index, name in enumerate(SDXL_OUTPUTS)}


def _sdxl_builtin(model_root: Path, work: Path) -> dict[str, np.ndarray]:
    """The built-in engine in a child process (``comfyserve run``), so its SDXL is gone when it ends."""
    work.mkdir(parents=True, exist_ok=True)
    workflow = work / "sdxl.json"
    workflow.write_text(json.dumps(sdxl_prompt()))
    out = work / "out"
    argv = [sys.executable, "-m", "comfyserve", "run", str(workflow), "--out", str(out), "--models", str(model_root)]
    subprocess.run(argv, check=True, capture_output=True, timeout=1500)
    return {name: pixels(next(iter(sorted(out.glob(f"{name}_*.png"))))) for name in SDXL_OUTPUTS}


@pytest.fixture(scope="module")
def sdxl_images(
    backend: ComfyUIBackend, model_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """(ComfyUI's, ours), each engine alone in memory while it runs."""
    work = tmp_path_factory.mktemp("parity-patches-sdxl")
    path = model_root / "checkpoints" / SDXL_CHECKPOINT
    write_full_size_checkpoint(ModelFamily.SDXL, path)
    try:
        backend.close()  # a fresh ComfyUI: nothing else held in memory
        theirs = _sdxl_comfyui(backend, work / "comfyui")
        backend.close()  # its memory back before the built-in engine loads the same model
        ours = _sdxl_builtin(model_root, work / "builtin")
    finally:
        path.unlink(missing_ok=True)
    yield theirs, ours


@pytest.mark.timeout(3600)  # two engines loading a full-width SDXL on 2 CPU cores
@pytest.mark.parametrize("name", SDXL_OUTPUTS)
def test_sdxl_text_encode_same_image_on_both_backends(
    sdxl_images: tuple[dict[str, np.ndarray], dict[str, np.ndarray]], name: str
) -> None:
    theirs, ours = sdxl_images
    assert theirs[name].shape == (64, 64, 3)
    assert_pixels_match(name, theirs[name], ours[name])
