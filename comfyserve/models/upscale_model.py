"""Upscale model files (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT ...) loaded through spandrel, as ComfyUI loads them.

spandrel detects the architecture and its hyper-parameters from the state dict. Its package imports
torchvision for two architectures only (LaMa inpainting, RestoreFormer face restoration), which this
environment leaves out: without torchvision, spandrel is imported beside a placeholder that exists only while
it imports, and those two architectures are refused by name at load time.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from comfyserve.models.cache import model_cache
from comfyserve.models.device import policy
from comfyserve.models.errors import ModelFileError
from comfyserve.models.files import SAFETENSORS_SUFFIXES, read_state_dict, read_torch_file
from comfyserve.models.memory import module_bytes, on_device, residency
from comfyserve.models.tiled_scale import ImageFn, tile_count, tiled_scale

_TORCHVISION_MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
NEEDS_TORCHVISION = ("LaMa", "RestoreFormer")  # spandrel's architectures whose modules import torchvision
TILE, OVERLAP, SMALLEST_TILE = 512, 32, 128  # ComfyUI's tiles, halved on out-of-memory down to the smallest
_SWINIR_DATAPARALLEL_KEY = "module.layers.0.residual_group.blocks.0.norm1.weight"


class _Placeholder(ModuleType):
    """Stands in for a torchvision module while spandrel imports; any name it is asked for is a stub."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError(f"torchvision.{name} is not installed")

        return unavailable


@cache
def _spandrel() -> ModuleType:
    if importlib.util.find_spec("torchvision") is not None:
        import spandrel

        return spandrel
    placeholders = {name: _Placeholder(name) for name in _TORCHVISION_MODULES}
    sys.modules.update(placeholders)
    try:
        import spandrel
    finally:  # other libraries probe for torchvision: they must keep finding none
        for name in placeholders:
            sys.modules.pop(name, None)
    return spandrel


@cache
def _loader() -> Any:
    """spandrel's loader over its registry, less the architectures torchvision's absence leaves broken."""
    spandrel = _spandrel()
    if importlib.util.find_spec("torchvision") is not None:
        return spandrel.ModelLoader()
    registry = spandrel.ArchRegistry()
    registry.add(*(a for a in spandrel.MAIN_REGISTRY if a.architecture.id not in NEEDS_TORCHVISION))
    return spandrel.ModelLoader(registry=registry)


def _read(path: Path) -> dict[Any, Any]:
    """The file's dict as ComfyUI hands it to spandrel (``load_torch_file(safe_load=True)``)."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return dict(read_state_dict(path))
    return read_torch_file(path)


def _unsupported(path: Path, state_dict: dict[Any, Any]) -> ModelFileError:
    spandrel = _spandrel()
    canonical = spandrel.canonicalize_state_dict(state_dict)
    for arch in spandrel.MAIN_REGISTRY:
        if arch.architecture.id in NEEDS_TORCHVISION and arch.architecture.detect(canonical):
            return ModelFileError(
                f"upscale model file {path.name!r} is a {arch.architecture.id} model, which needs torchvision "
                "(not installed here)"
            )
    return ModelFileError(f"upscale model file {path.name!r} is not of an architecture spandrel supports")


def build_upscale_model(state_dict: dict[Any, Any], path: Path) -> Any:
    """spandrel's ImageModelDescriptor for ``state_dict`` (read from ``path``), in eval mode."""
    if _SWINIR_DATAPARALLEL_KEY in state_dict:  # SwinIR saved from DataParallel: ComfyUI strips the prefix
        state_dict = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    spandrel = _spandrel()
    try:
        descriptor = _loader().load_from_state_dict(state_dict).eval()
    except spandrel.UnsupportedModelError:
        raise _unsupported(path, state_dict) from None
    except (KeyError, RuntimeError, ValueError, IndexError) as exc:  # detected, but the weights do not fit
        raise ModelFileError(f"cannot load upscale model file {path.name!r}: {exc}") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelFileError(
            f"upscale model file {path.name!r} holds a {descriptor.architecture.id} model; "
            "Upscale model must be a single-image model."
        )
    return descriptor


def load_upscale_model(path: Path) -> Any:
    """The upscale model in ``path`` (cached like the other model files)."""

    def load(p: Path) -> tuple[Any, int]:
        descriptor = build_upscale_model(_read(p), p)
        return descriptor, module_bytes(descriptor.model)

    return model_cache().get_or_load("upscale_model", path, load)


def upscale_tiled(
    fn: ImageFn, pixels: torch.Tensor, scale: float, on_tiles: Callable[[int], Callable[[], None]]
) -> torch.Tensor:
    """``fn`` over ``pixels`` ``[B, C, H, W]`` in ComfyUI's tiles, the tile halved after each out-of-memory error
    until it would fall below :data:`SMALLEST_TILE`. ``on_tiles(count)`` gives the per-tile callback of a try."""
    tile = TILE
    while True:
        count = pixels.shape[0] * tile_count(pixels.shape[3], pixels.shape[2], tile, OVERLAP)
        try:
            return tiled_scale(pixels, fn, tile, OVERLAP, scale, on_tile=on_tiles(count))
        except torch.OutOfMemoryError:
            tile //= 2
            if tile < SMALLEST_TILE:
                raise


def upscale_image(
    descriptor: Any, image: torch.Tensor, on_tiles: Callable[[int], Callable[[], None]] = lambda _: lambda: None
) -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` in 0..1 upscaled by the model's scale, clamped to 0..1. The model is on the compute
    device for the call only, as ComfyUI moves it there and back."""
    module = descriptor.model
    try:
        with on_device(module):
            pixels = image.movedim(-1, -3).to(policy().device)
            out = upscale_tiled(descriptor, pixels, descriptor.scale, on_tiles)
    finally:
        residency().forget(module)
        module.to("cpu")
    return torch.clamp(out.movedim(-3, -1), min=0.0, max=1.0)
