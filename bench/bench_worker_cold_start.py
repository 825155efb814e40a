"""Cold start of ``comfyserve worker`` to its first receive, with its parts, on a moto server (loopback).

A tiny SD1-layout checkpoint in the models bucket is preloaded (``COMFYSERVE_PRELOAD``) and a no-model warm-up
workflow runs before the first receive. The first worker copies the checkpoint from S3 to the shared root (the
EFS stand-in, a local folder); the later ones find it there. Each worker is a fresh process, stopped with SIGTERM
once it logged its cold start; the figures are the parts it logged.

    .venv/bin/python bench/bench_worker_cold_start.py [--workers 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from comfyserve.adapters.aws.emulator import moto_server, offline_environment
from comfyserve.adapters.aws.provision import create_bucket, provision
from comfyserve.model_store.sync import sync
from comfyserve.models.handles import ModelFamily
from comfyserve.models.testmodels import save, tiny_checkpoint

REGION = "us-east-1"
MODEL = "checkpoints/tiny-sd15.safetensors"
ROOT = Path(__file__).resolve().parent.parent
WARMUP: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "warmup"}},
}


def cold_start(env: dict[str, str], log: Path) -> dict[str, Any]:
    """Start a worker, wait for its cold start line, stop it; returns the logged parts."""
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "comfyserve", "worker"], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"cold start"' in line:
                    parts: dict[str, Any] = json.loads(line)["cold_start"]
                    return parts
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise RuntimeError("no cold start within 300 s")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()
    with moto_server(REGION) as endpoint, tempfile.TemporaryDirectory() as scratch:
        session = boto3.Session(region_name=REGION)
        s3 = session.client("s3", endpoint_url=endpoint)
        sqs = session.client("sqs", endpoint_url=endpoint)
        ddb = session.client("dynamodb", endpoint_url=endpoint)
        events = session.client("events", endpoint_url=endpoint)
        resources = provision(s3, sqs, ddb, events, "bench-cold")
        create_bucket(s3, "bench-cold-models")
        weights = Path(scratch) / "tiny.safetensors"
        save(tiny_checkpoint(ModelFamily.SD1), weights)
        data = weights.read_bytes()
        s3.put_object(
            Bucket="bench-cold-models", Key=MODEL, Body=data, Metadata={"sha256": hashlib.sha256(data).hexdigest()}
        )
        sync(s3, "bench-cold-models", "inventory.json")
        warmup = Path(scratch) / "warmup.json"
        warmup.write_text(json.dumps(WARMUP))
        env = {key: value for key, value in os.environ.items() if not key.startswith(("COMFYSERVE_", "AWS_"))}
        env.update(offline_environment(REGION))
        env.update(
            {
                "AWS_ENDPOINT_URL": endpoint,
                "COMFYSERVE_BUCKET": resources.bucket,
                "COMFYSERVE_QUEUE_URL": resources.queue.queue_url,
                "COMFYSERVE_TABLE": resources.table,
                "COMFYSERVE_EVENT_BUS": resources.bus,
                "COMFYSERVE_MODELS_BUCKET": "bench-cold-models",
                "COMFYSERVE_MODEL_ROOT": str(Path(scratch) / "efs"),
                "COMFYSERVE_PRELOAD": MODEL,
                "COMFYSERVE_WARMUP_WORKFLOW": str(warmup),
                "COMFYSERVE_RECEIVE_WAIT_S": "1",
                "PYTHONPATH": str(ROOT),
            }
        )
        (Path(scratch) / "efs").mkdir()
        runs = []
        for index in range(args.workers):
            run_env = {**env, "COMFYSERVE_WORK_DIR": str(Path(scratch) / f"w{index}")}
            runs.append(cold_start(run_env, Path(scratch) / f"w{index}.log"))
    first, later = runs[0], runs[1:]
    figures = {
        "model": f"{MODEL} ({len(data) / 1e6:.1f} MB, SD1 layout)",
        "first_worker_model_from_s3": first,
        "later_workers_model_from_efs": {
            part: round(sum(run[part] for run in later) / len(later), 3)
            for part in ("process_s", "clients_s", "imports_s", "cuda_init_s", "backend_start_s", "warmup_s", "total_s")
        }
        if later
        else {},
        "later_workers_model_load_s": [run["model_load_s"] for run in later],
    }
    write_results("worker_cold_start", figures)


if __name__ == "__main__":
    main()
