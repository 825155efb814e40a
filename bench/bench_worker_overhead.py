"""Warm worker overhead per job on the local adapters: receive → claim → run → outputs → manifest → completion
(terminal write and event, in process through the blob store's signal) → acknowledge, less the backend's run.

Issue 7 target: under 30 ms per job for a no-model workflow (one 8x8 image saved).

    .venv/bin/python bench/bench_worker_overhead.py [--jobs 200]

One process: the data directory's adapters (SQLite queue and store, blob directory, event log) in a temporary
folder, the built-in backend kept warm, ``Worker.poll`` timed per job; the backend's own time (the manifest's
``execution_s``) is subtracted to leave the loop's overhead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary_ms, write_results
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.nodes import builtin_registry
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings

TENANT = "bench"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs to run (default 200; the first is the warm-up)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as folder:
        adapters = LocalAdapters.open(Path(folder), "http://127.0.0.1:9")
        backend = BuiltinBackend(builtin_registry())
        worker = Worker(
            WorkerPorts(adapters.blobs, adapters.queue, adapters.store, adapters.bus),
            backend,
            WorkerSettings(work_dir=adapters.work_dir, receive_wait_s=0),
        )
        adapters.blobs.on_created(worker.completion.on_object_created)
        job_ids = []
        for _ in range(args.jobs):
            record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow=WORKFLOW)
            adapters.store.create(record)
            adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
            job_ids.append(record.job_id)
        walls, overheads = [], []
        for job_id in job_ids:
            started = time.perf_counter()
            outcomes = worker.poll()
            wall = time.perf_counter() - started
            if outcomes != [Outcome.SUCCEEDED]:
                raise SystemExit(f"job {job_id}: {outcomes}")
            manifest = JobManifest.model_validate_json(adapters.blobs.get(manifest_key(TENANT, job_id)))
            walls.append(wall)
            overheads.append(wall - (manifest.timings.execution_s or 0.0))
        records = [adapters.store.get_by_id(job_id) for job_id in job_ids]
        succeeded = sum(1 for r in records if r is not None and r.status is JobStatus.SUCCEEDED)
        backend.close()
        adapters.close()
    warm = overheads[1:]
    write_results(
        "worker_overhead",
        {
            "adapters": "local (SQLite queue and store, blob directory, event log), completion in process",
            "workflow": "EmptyImage 8x8 → SaveImage",
            "jobs": args.jobs,
            "succeeded": succeeded,
            "first_job_ms": round(walls[0] * 1000, 3),
            "warm_job_wall": summary_ms(walls[1:]),
            "warm_overhead": summary_ms(warm),
            "target_overhead_ms": 30,
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
    )


if __name__ == "__main__":
    main()
