"""Checkpoint load time against the time to read its bytes, on a full-size random-weight checkpoint.

Writes an SD1.5-layout checkpoint (1.07 B parameters, fp16: about 2.1 GB) with random weights, reads its bytes,
then loads it through ``load_checkpoint`` (read, detect, convert, build) and moves the modules to the compute
device. Both reads come from the page cache (the file was just written), so the ratio shows our overhead over
raw I/O. Usage: ``python bench/bench_checkpoint_load.py [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import write_results
from comfyserve.models import layout
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.device import policy
from comfyserve.models.handles import Autoencoder, DiffusionModel, ModelFamily, TextEncoder
from comfyserve.models.memory import on_device
from comfyserve.models.testmodels import save

CHUNK = 64 * 2**20


def full_size_checkpoint(path: Path) -> None:
    shapes = layout.checkpoint_shapes(ModelFamily.SD1, layout.FULL_SIZE[ModelFamily.SD1])
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            sd[key] = torch.arange(shape[-1]).reshape(shape)
        else:
            sd[key] = torch.empty(shape, dtype=torch.float16).normal_(0, 0.02)
    save(sd, path)


def read_bytes(path: Path) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total


def _synchronize() -> None:
    if policy().device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class TimedLoad:
    """A full-size checkpoint's size, the time to read its bytes and to load it, and what it loaded."""

    size: int
    read_s: float
    load_s: float
    loaded: tuple[DiffusionModel, TextEncoder, Autoencoder]


def timed_full_size_load(directory: Path | None = None) -> TimedLoad:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = Path(tmp) / "sd15-random.safetensors"
        full_size_checkpoint(path)
        start = time.perf_counter()
        size = read_bytes(path)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        loaded = load_checkpoint(path)
        return TimedLoad(size, read_s, time.perf_counter() - start, loaded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the checkpoint (default: a temp dir)")
    args = parser.parse_args()
    timed = timed_full_size_load(args.dir)
    model, clip, vae = timed.loaded
    start = time.perf_counter()
    with on_device(model.unet, *(e.module for e in clip.encoders), vae.vae):
        _synchronize()
    device_s = time.perf_counter() - start
    write_results(
        "checkpoint_load",
        {
            "device": torch.cuda.get_device_name() if policy().device.type == "cuda" else "cpu",
            "checkpoint_bytes": timed.size,
            "read_bytes_s": round(timed.read_s, 3),
            "load_checkpoint_s": round(timed.load_s, 3),
            "to_device_s": round(device_s, 3),
            "load_over_read": round(timed.load_s / timed.read_s, 2),
        },
    )


if __name__ == "__main__":
    main()
