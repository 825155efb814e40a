"""The local stack through its HTTP server: submit latency, and end-to-end throughput with 2 workers.

Targets (issue 4): submit (validation, record, enqueue) p50 under 5 ms and p99 under 25 ms; at least 100 jobs/s
submit → succeeded, sustained for 30 s with 2 workers and a no-model workflow, none lost or duplicated.

    .venv/bin/python bench/bench_local_stack.py [--duration 30] [--rate 150] [--submits 500]

Latency runs against a stack with no workers (only the submit path is measured); throughput submits at
``--rate`` for ``--duration`` seconds and counts completions from the event log (``JobSucceeded`` times), then
checks every job succeeded exactly once (one ``JobStarted``, one ``JobSucceeded``, one attempt).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary_ms, timings, write_results
from comfyserve.contracts.events import JobEventType
from comfyserve.localstack.apigw import LambdaContextStub, build_event
from comfyserve.localstack.stack import LocalStack

KEY = "bench-key"
HEADERS = [("x-api-key", KEY), ("Content-Type", "application/json")]
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 1234}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}


class Submitter:
    """POST /v1/jobs over one keep-alive connection (stdlib http.client: the client's own overhead stays small
    next to the server's, which is what these figures are about)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
        self.body = json.dumps({"workflow": WORKFLOW}).encode()

    def __call__(self) -> str:
        self.connection.request("POST", "/v1/jobs", body=self.body, headers=dict(HEADERS))
        response = self.connection.getresponse()
        text = response.read()
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {text[:300]!r}")
        job_id: str = json.loads(text)["job_id"]
        return job_id


def submit_latency(data_dir: Path, count: int) -> dict[str, Any]:
    """Submits over HTTP (keep-alive), and the same submit resolved in process: the difference is what the
    local server (HTTP parsing, event building, response writing) adds to the route table."""
    with LocalStack(data_dir, port=0, workers=0, api_keys={"bench": KEY}) as stack:
        submit = Submitter(stack.url)
        for _ in range(20):  # warm the connection and the service's caches
            submit()
        over_http = timings(submit, count)
        event = build_event("POST", "/v1/jobs", "", HEADERS, submit.body, "127.0.0.1")
        in_process = timings(lambda: stack.app.resolve(event, LambdaContextStub()), count)
    return {"submits": count, **summary_ms(over_http), "route_table_in_process": summary_ms(in_process)}


def throughput(data_dir: Path, duration_s: float, rate: float, workers: int) -> dict[str, Any]:
    with LocalStack(data_dir, port=0, workers=workers, api_keys={"bench": KEY}) as stack:
        stack.wait_ready()
        submit = Submitter(stack.url)
        submitted: list[str] = []
        started = time.time()
        while (now := time.time()) < started + duration_s:
            due = int((now - started) * rate) + 1
            while len(submitted) < due:
                submitted.append(submit())
            time.sleep(max(0.0, started + len(submitted) / rate - time.time()))
        submit_end = time.time()
        deadline = submit_end + 120
        while time.time() < deadline:
            done = sum(1 for e in stack.adapters.bus.events() if e.type is JobEventType.JOB_SUCCEEDED)
            if done >= len(submitted):
                break
            time.sleep(0.5)
        drained = time.time()
        events = stack.adapters.bus.events()
        records = {job_id: stack.adapters.store.get_by_id(job_id) for job_id in submitted}
    counts: dict[JobEventType, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for event in events:
        counts[event.type][event.job_id] += 1
    finished = sorted(e.time.timestamp() for e in events if e.type is JobEventType.JOB_SUCCEEDED)
    in_window = [t for t in finished if started <= t <= started + duration_s]
    succeeded = [r for r in records.values() if r is not None and r.status.value == "succeeded"]
    return {
        "workers": workers,
        "duration_s": duration_s,
        "offered_rate_per_s": rate,
        "submitted": len(submitted),
        "submitted_per_s": round(len(submitted) / (submit_end - started), 1),
        "completed_in_window_per_s": round(len(in_window) / duration_s, 1),
        "end_to_end_per_s": round(len(finished) / (drained - started), 1),
        "drain_after_submit_s": round(drained - submit_end, 2),
        "succeeded": len(succeeded),
        "lost": len(submitted) - len(succeeded),
        "duplicated_starts": sum(1 for job in submitted if counts[JobEventType.JOB_STARTED][job] > 1),
        "duplicated_successes": sum(1 for job in submitted if counts[JobEventType.JOB_SUCCEEDED][job] > 1),
        "attempts_over_1": sum(1 for r in succeeded if r.attempts != 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="throughput window in seconds (default 30)")
    parser.add_argument("--rate", type=float, default=150.0, help="offered submits per second (default 150)")
    parser.add_argument("--submits", type=int, default=500, help="submits for the latency figures")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-") as temp:
        load_before = os.getloadavg()[0]  # other work on the machine skews these figures: record it
        latency = submit_latency(Path(temp) / "latency", args.submits)
        flow = throughput(Path(temp) / "throughput", args.duration, args.rate, args.workers)
        flow["load_average_1m"] = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    write_results(
        "local_stack",
        {
            "submit_latency": {**latency, "targets": {"p50_ms": 5, "p99_ms": 25}},
            "throughput": {**flow, "target_per_s": 100},
        },
    )


if __name__ == "__main__":
    main()
