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
    except Exception as exc:  # any parse failure of a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"cannot read model file {path.name!r}: it is truncated or corrupt ({reason})") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError(f"model file {path.name!r} holds a {type(loaded).__name__}, not a dict of tensors")
    return {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
