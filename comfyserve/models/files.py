"""Reading model files: safetensors, or torch pickles through ``torch.load(weights_only=True)`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from comfyserve.models.errors import ModelFileError

StateDict = dict[str, torch.Tensor]
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def read_state_dict(path: Path) -> StateDict:
    """All tensors of a model file; a truncated or corrupt file is a ModelFileError naming it."""
    try:
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path.name!r} does not exist") from None
    except Exception as exc:  # any parse failure of a damaged file; the library's words stay in the chain
        raise ModelFileError(f"cannot read model file {path.name!r}: the file is truncated or corrupt") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(f"model file {path.name!r} holds a {type(loaded).__name__}, not a dict of tensors")
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def state_dict_bytes(sd: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())
