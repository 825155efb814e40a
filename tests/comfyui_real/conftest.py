"""The real-ComfyUI suite (``make test-comfyui COMFYUI_DIR=...``, never part of ``make test``): every test here
carries the ``comfyui`` marker, which ``make unit`` deselects. It needs a ComfyUI checkout with its own
environment (docs/COMFYUI_BACKEND.md says how to set one up offline); without ``COMFYUI_DIR`` it fails."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig

HERE = Path(__file__).parent
PACKS = HERE / "packs"
COMPAT = HERE.parent / "data" / "compat_workflows"
# Model files the compatibility workflows name: empty stand-ins, enough for ComfyUI to list them.
PLACEHOLDER_MODELS = (
    "checkpoints/v1-5-pruned-emaonly.ckpt",
    "checkpoints/v1-5-pruned-emaonly.safetensors",
    "upscale_models/RealESRGAN_x8.pth",
    "controlnet/control_v11p_sd15_scribble.pth",
    "vae/vae-ft-mse-840000-ema-pruned.safetensors",
)
FIGURES: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.comfyui)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("ComfyUI backend figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value:.3f}")


@pytest.fixture(scope="session")
def comfyui_dir() -> Path:
    value = os.environ.get("COMFYUI_DIR")
    if not value or not (Path(value) / "main.py").is_file():
        raise RuntimeError("the real-ComfyUI suite needs COMFYUI_DIR=<a ComfyUI checkout> (make test-comfyui)")
    return Path(value)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    for name in PLACEHOLDER_MODELS:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def backend(comfyui_dir: Path, model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyUIBackend]:
    config = ComfyUIConfig(
        comfyui_dir=comfyui_dir,
        work_dir=tmp_path_factory.mktemp("comfyui-work"),
        python=Path(os.environ["COMFYUI_PYTHON"]) if os.environ.get("COMFYUI_PYTHON") else None,
        model_root=model_root,
        custom_nodes=(PACKS,),
        interrupt_grace_s=20.0,
    )
    backend = ComfyUIBackend(config)
    started = time.perf_counter()
    backend.start()
    FIGURES["ComfyUI start (process start to ready, s)"] = time.perf_counter() - started
    yield backend
    backend.close()
