"""Reading model files: safetensors, or torch pickles through ``torch.load(weights_only=True)`` only.

safetensors files are read tensor by tensor into the process's own memory rather than mapped, each tensor
passed through ``cast`` as it is read: safetensors' ``load_file`` maps the whole file and keeps every page it
touched resident while any one of its tensors lives, so an SDXL checkpoint's fp16 UNet stayed resident beside
the fp32 UNet built from it (peak 17.7 GiB against 12 GiB for the loaded model; ``bench/bench_sdxl_memory.py``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from comfyserve.models.errors import ModelFileError

StateDict = dict[str, torch.Tensor]
Cast = Callable[[str, torch.Tensor], torch.Tensor]  # (key, tensor as stored) -> the tensor to keep
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_HEADER_LIMIT = 100 * 2**20  # safetensors' own bound on the JSON header
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class _Corrupt(Exception):
    """The file does not hold what its header says."""


def _as_stored(_key: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def read_safetensors(path: Path, cast: Cast = _as_stored) -> StateDict:
    """Every tensor of a safetensors file in the process's own memory (no mapping of the file is kept). Each is
    read into one scratch buffer and passed through ``cast``; what ``cast`` keeps is its own copy, so a
    converted tensor never waits beside the file's bytes as stored."""
    with open(path, "rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8).ljust(8, b"\xff"))
        if header_size > _HEADER_LIMIT:
            raise _Corrupt("header too large")
        entries = {k: v for k, v in json.loads(file.read(header_size)).items() if k != "__metadata__"}
        start = 8 + header_size
        sizes = {name: entry["data_offsets"][1] - entry["data_offsets"][0] for name, entry in entries.items()}
        scratch = torch.empty(max(sizes.values(), default=0), dtype=torch.uint8)
        buffer: Any = scratch.numpy()  # the scratch tensor's memory, written in place
        tensors = {}
        for name, entry in entries.items():
            file.seek(start + entry["data_offsets"][0])
            if file.readinto(buffer[: sizes[name]]) != sizes[name]:
                raise _Corrupt(f"tensor {name!r} runs past the end of the file")
            stored = scratch[: sizes[name]].view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])
            kept = cast(name, stored)
            shares = kept.untyped_storage().data_ptr() == scratch.untyped_storage().data_ptr()
            tensors[name] = kept.clone() if shares else kept
    return tensors


def read_state_dict(path: Path, cast: Cast = _as_stored) -> StateDict:
    """All tensors of a model file, each through ``cast``; a truncated or corrupt file is a ModelFileError
    naming it."""
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        try:
            return read_safetensors(path, cast)
        except FileNotFoundError:
            raise ModelFileError(f"model file {path.name!r} does not exist") from None
        except Exception as exc:  # any parse failure of a damaged file; the library's words stay in the chain
            raise ModelFileError(f"cannot read model file {path.name!r}: the file is truncated or corrupt") from exc
    loaded = read_torch_file(path)
    return {k: cast(k, v) for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def read_torch_file(path: Path) -> dict[Any, Any]:
    """A torch pickle's dict as ComfyUI's ``load_torch_file`` returns it: its ``state_dict`` entry, the dict of a
    lone entry (``{"params_ema": {...}}``), else the whole dict; read with ``weights_only=True`` only."""
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"model file {path.name!r} does not exist") from None
    except Exception as exc:  # any parse failure of a damaged file; the library's words stay in the chain
        raise ModelFileError(f"cannot read model file {path.name!r}: the file is truncated or corrupt") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    elif isinstance(loaded, dict) and len(loaded) == 1 and isinstance(next(iter(loaded.values())), dict):
        loaded = next(iter(loaded.values()))
    if not isinstance(loaded, dict):
        raise ModelFileError(f"model file {path.name!r} holds a {type(loaded).__name__}, not a dict of tensors")
    return loaded


def state_dict_bytes(sd: StateDict) -> int:
    return sum(t.numel() * t.element_size() for t in sd.values())
