"""The ComfyUI backend: the child's cold start with its parts, and the latency it adds per job over ComfyUI called
directly (same warm workflow, same process). Needs a ComfyUI checkout (docs/COMFYUI_BACKEND.md); without
``COMFYUI_DIR`` it says so and writes nothing.

Issue 9 target: under 20 ms added per job.

    COMFYUI_DIR=/work/comfyui/ComfyUI .venv/bin/python bench/bench_comfyui_backend.py [--jobs 50] [--starts 3]

Cold start parts, from ComfyUI's own log lines as they appear: ``python_and_torch_s`` (spawn → the device line,
torch imported), ``nodes_s`` (→ the custom-node import times: core, extras and custom nodes loaded),
``server_s`` (→ "To see the GUI": listening), ``ready_s`` (→ ``/system_stats`` answers: the worker is ready).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary_ms, write_results
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig
from comfyserve.worker.comfyui.process import LOG_NAME

WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
MARKS = (
    ("python_and_torch_s", "Device:"),
    ("nodes_s", "Import times for custom nodes"),
    ("server_s", "To see the GUI"),
)


def watch_log(log: Path, started: float, seen: dict[str, float], stop: threading.Event) -> None:
    while not stop.is_set() and len(seen) < len(MARKS):
        text = log.read_text(errors="replace") if log.exists() else ""
        for name, mark in MARKS:
            if name not in seen and mark in text:
                seen[name] = round(time.perf_counter() - started, 3)
        time.sleep(0.02)


def cold_start(comfyui_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-comfyui-") as work:
        backend = ComfyUIBackend(ComfyUIConfig(comfyui_dir=comfyui_dir, work_dir=Path(work)))
        seen: dict[str, float] = {}
        stop = threading.Event()
        started = time.perf_counter()
        log = backend.process.folders.root / LOG_NAME
        watcher = threading.Thread(target=watch_log, args=(log, started, seen, stop))
        watcher.start()
        try:
            backend.process.start()
            seen["ready_s"] = round(time.perf_counter() - started, 3)
        finally:
            stop.set()
            watcher.join()
            backend.close()
        return seen


def per_job(comfyui_dir: Path, jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-comfyui-") as work:
        backend = ComfyUIBackend(ComfyUIConfig(comfyui_dir=comfyui_dir, work_dir=Path(work)))
        backend.start()
        try:
            through = []
            for index in range(jobs + 1):
                started = time.perf_counter()
                job = BackendJob(job_id=f"bench-{index}", prompt=WORKFLOW, work_dir=Path(work) / f"job{index}")
                assert backend.run(job).status == "success"
                through.append(time.perf_counter() - started)
            client = backend.process.client
            assert client is not None
            direct = []
            for index in range(jobs + 1):
                save = {**WORKFLOW["2"], "inputs": {**WORKFLOW["2"]["inputs"], "run": index}}
                started = time.perf_counter()
                with client.websocket("bench-direct") as websocket:
                    answer = client.queue_prompt({"prompt": {**WORKFLOW, "2": save}, "client_id": "bench-direct"})
                    while True:
                        message = websocket.recv(timeout=60)
                        if isinstance(message, str):
                            data = json.loads(message)
                            if data["type"] == "executing" and data["data"].get("node") is None:
                                break
                    client.history(answer["prompt_id"])
                direct.append(time.perf_counter() - started)
        finally:
            backend.close()
    ours, theirs = summary_ms(through[1:]), summary_ms(direct[1:])
    return {
        "through_backend": ours,
        "comfyui_directly": theirs,
        "added_p50_ms": round(ours["p50_ms"] - theirs["p50_ms"], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    comfyui_dir = os.environ.get("COMFYUI_DIR")
    if not comfyui_dir:
        print("bench_comfyui_backend: skipped (set COMFYUI_DIR to a ComfyUI checkout)")
        return 0
    starts = [cold_start(Path(comfyui_dir)) for _ in range(args.starts)]
    figures = {
        "cold_start_median": {key: sorted(s[key] for s in starts)[len(starts) // 2] for key in starts[0]},
        "per_job": per_job(Path(comfyui_dir), args.jobs),
        "jobs": args.jobs,
        "starts": args.starts,
    }
    write_results("comfyui_backend", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
