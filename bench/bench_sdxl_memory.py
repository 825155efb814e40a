"""SDXL peak memory on the CPU: the same txt2img job through ComfyUI and through the built-in engine.

A full-width SDXL checkpoint with random weights (fp16, about 6.9 GB) is written into a scratch model root by a
child process; then each engine runs ``examples/sd15_txt2img.json`` pointed at it (64×64, 4 steps), one after
the other, each in its own fresh process. The figure is that process's peak resident set: ComfyUI's server
``VmHWM`` read after the job (and its ``VmRSS`` then, what it keeps loaded), the built-in engine's
``comfyserve run`` child's ``ru_maxrss``. Needs a ComfyUI checkout (docs/COMFYUI_BACKEND.md);
without ``COMFYUI_DIR`` it says so and writes nothing.

Issue 10 target: the built-in engine's peak no higher than ComfyUI's.

    COMFYUI_DIR=/work/comfyui/ComfyUI .venv/bin/python bench/bench_sdxl_memory.py [--dir SCRATCH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import write_full_size_checkpoint
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig

GIB = 1024**3
CHECKPOINT = "bench-sdxl.safetensors"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sd15_txt2img.json"


def workflow() -> dict[str, Any]:
    prompt: dict[str, Any] = json.loads(EXAMPLE.read_text())
    prompt["4"]["inputs"]["ckpt_name"] = CHECKPOINT
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"]["steps"] = 4
    return prompt


def resident(pid: int, field: str = "VmHWM") -> int:
    """Bytes of the process's peak resident set (``VmHWM``) or, with ``VmRSS``, of its resident set now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def comfyui_peak(comfyui_dir: Path, model_root: Path, work: Path) -> dict[str, float]:
    backend = ComfyUIBackend(ComfyUIConfig(comfyui_dir=comfyui_dir, work_dir=work, model_root=model_root))
    backend.start()
    try:
        pid = backend.process.pid
        assert pid is not None
        idle = resident(pid)
        started = time.perf_counter()
        result = backend.run(BackendJob(job_id="bench-sdxl-memory", prompt=workflow(), work_dir=work / "job"))
        seconds = time.perf_counter() - started
        if result.status != "success":
            raise RuntimeError(f"ComfyUI failed the job: {result.error}")
        peak, after = resident(pid), resident(pid, "VmRSS")
    finally:
        backend.close()
    return {
        "idle_peak_gib": round(idle / GIB, 2),
        "peak_gib": round(peak / GIB, 2),
        "resident_after_job_gib": round(after / GIB, 2),
        "job_s": round(seconds, 1),
    }


def builtin_peak(model_root: Path, work: Path) -> dict[str, float]:
    work.mkdir(parents=True)
    path = work / "workflow.json"
    path.write_text(json.dumps(workflow()))
    argv = [
        sys.executable,
        "-m",
        "comfyserve",
        "run",
        str(path),
        "--out",
        str(work / "out"),
        "--models",
        str(model_root),
    ]
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"comfyserve run failed with exit status {os.waitstatus_to_exitcode(status)}")
    return {"peak_gib": round(usage.ru_maxrss * 1024 / GIB, 2), "job_s": round(seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, default=os.environ.get("COMFYUI_DIR"))
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--models", type=Path, default=None, help="model root kept between runs (default: scratch)")
    args = parser.parse_args()
    if args.comfyui_dir is None or not (args.comfyui_dir / "main.py").is_file():
        print("bench_sdxl_memory: skipped (set COMFYUI_DIR to a ComfyUI checkout)")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-sdxl-", dir=args.dir) as scratch:
        root = Path(scratch)
        model_root = args.models or root / "models"
        checkpoint = model_root / "checkpoints" / CHECKPOINT
        if not checkpoint.is_file():
            write_full_size_checkpoint(ModelFamily.SDXL, checkpoint)
        comfyui = comfyui_peak(args.comfyui_dir, model_root, root / "comfyui")
        print(f"ComfyUI: {comfyui}", flush=True)
        builtin = builtin_peak(model_root, root / "builtin")
    write_results(
        "sdxl_memory",
        {
            "job": "SDXL full-width random-weight checkpoint (fp16 file), 64x64, 4 euler steps, CPU",
            "comfyui": comfyui,
            "builtin": builtin,
            "builtin_over_comfyui": round(builtin["peak_gib"] / comfyui["peak_gib"], 3),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
