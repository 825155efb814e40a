"""CPU txt2img: our node chain against diffusers' ``StableDiffusionPipeline`` on the same tiny SD1.x weights.

Both sides encode the prompt and a negative prompt, run 20 Euler steps with classifier-free guidance (one
batch of two per step) and decode with the VAE, on the very same module objects (the tiny random-weight
checkpoint of ``comfyserve.models.testmodels``, loaded through ``load_checkpoint``). Runs alternate between
the two sides so that machine load hits both alike; the ratio of the best runs is the figure to read.
Usage: ``python bench/bench_txt2img_cpu.py [--size 256] [--steps 20] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from bench.common import write_results
from bench.txt2img_sides import comfyserve_side, diffusers_side
from comfyserve.models.checkpoint import load_checkpoint
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import save, tiny_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (multiple of 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny-sd15.safetensors"
        save(tiny_checkpoint(ModelFamily.SD1), path)
        model, clip, vae = load_checkpoint(path)
    sides = {
        "comfyserve": comfyserve_side(model, clip, vae, decode=True),
        "diffusers": diffusers_side(model, clip, vae, decode=True),
    }
    samples: dict[str, list[float]] = {name: [] for name in sides}
    with torch.no_grad():
        for run in sides.values():
            run(args.size, args.steps, 1)  # warm-up
        for _ in range(args.repeat):
            for name, run in sides.items():
                start = time.perf_counter()
                run(args.size, args.steps, 1)
                samples[name].append(time.perf_counter() - start)
    best = {name: min(times) for name, times in samples.items()}
    median = {name: statistics.median(times) for name, times in samples.items()}
    write_results(
        "txt2img_cpu",
        {
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "size": args.size,
            "steps": args.steps,
            "sampler": "euler / normal, cfg 8 (diffusers: EulerDiscreteScheduler, linspace)",
            "comfyserve_best_s": round(best["comfyserve"], 3),
            "diffusers_best_s": round(best["diffusers"], 3),
            "comfyserve_median_s": round(median["comfyserve"], 3),
            "diffusers_median_s": round(median["diffusers"], 3),
            "ratio_best": round(best["comfyserve"] / best["diffusers"], 3),
            "ratio_median": round(median["comfyserve"] / median["diffusers"], 3),
            "target_ratio": 1.1,
        },
    )


if __name__ == "__main__":
    main()
