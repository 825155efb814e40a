"""GPU txt2img: an SD1.5-sized UNet (random weights) at 512², fp16, batch 1 and 4, beside diffusers.

Both sides run text encoding and 20 Euler steps with classifier-free guidance on the same modules, measured
alternately in one process on one card; figures are steps per second and peak GPU memory, plus the load time
of the full-size (about 2 GB) checkpoint against the time to read its bytes. Run it where a GPU is available:
``python bench/bench_txt2img_gpu.py [--steps 20] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.bench_checkpoint_load import timed_full_size_load
from bench.common import write_results
from bench.txt2img_sides import Side, comfyserve_side, diffusers_side

SIZE = 512


def measure(run: Side, steps: int, batch: int) -> tuple[float, int]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(SIZE, steps, batch)
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_txt2img_gpu: no CUDA device here; run it on a GPU machine")
    figures: dict[str, Any] = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "size": SIZE}
    timed = timed_full_size_load()
    model, clip, vae = timed.loaded
    figures["checkpoint"] = {
        "bytes": timed.size,
        "read_s": round(timed.read_s, 3),
        "load_s": round(timed.load_s, 3),
        "load_over_read": round(timed.load_s / timed.read_s, 2),
    }
    sides = {
        "comfyserve": comfyserve_side(model, clip, vae, decode=False),
        "diffusers": diffusers_side(model, clip, vae, decode=False, device="cuda"),
    }
    with torch.no_grad():
        for batch in (1, 4):
            for run in sides.values():
                measure(run, args.steps, batch)  # warm-up
            best: dict[str, float] = {}
            peak: dict[str, int] = {}
            for _ in range(args.repeat):
                for name, run in sides.items():
                    seconds, memory = measure(run, args.steps, batch)
                    best[name] = min(best.get(name, seconds), seconds)
                    peak[name] = max(peak.get(name, 0), memory)
            figures[f"batch_{batch}"] = {
                name: {
                    "best_s": round(best[name], 4),
                    "steps_per_s": round(args.steps / best[name], 2),
                    "peak_gib": round(peak[name] / 2**30, 3),
                }
                for name in sides
            } | {"ratio_time": round(best["comfyserve"] / best["diffusers"], 3)}
    write_results("txt2img_gpu", figures)


if __name__ == "__main__":
    main()
