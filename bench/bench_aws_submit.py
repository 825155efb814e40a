"""The submit path and the worker loop over the AWS adapters (S3, SQS, DynamoDB, EventBridge) against moto.

Issue 4: show that the AWS adapters add no avoidable round trips. Every boto3 HTTP request is counted by
operation (a botocore ``before-send`` hook on the session, so retries would count too) and written next to
the timings, for each submit and for each job, with the minimum each needs and a verdict per operation.

    .venv/bin/python bench/bench_aws_submit.py [--jobs 200] [--timeout 300]

One process: moto's ``ThreadedMotoServer`` on a free loopback port (dummy credentials; a request to any other
address is refused before it is sent), the job service from the cloud composition root (``aws_service``)
behind the route table with API Gateway REST events, then one worker loop that runs every job. moto shares
the process (and the GIL) with the client, so the timings are moto's service times plus ours, not AWS's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
from botocore.config import Config

from bench.common import summary_ms, write_results
from comfyserve.adapters.aws.dynamodb import DynamoJobStore
from comfyserve.adapters.aws.emulator import moto_server
from comfyserve.adapters.aws.eventbridge import EVENT_SOURCE, EventBridgeBus
from comfyserve.adapters.aws.provision import AwsResources, provision
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiGatewayAuthenticator
from comfyserve.api.wiring import AwsResourceNames, aws_service
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobStatus
from comfyserve.contracts.manifest import parse_manifest_key
from comfyserve.engine.catalog import Catalog
from comfyserve.localstack.apigw import LambdaContextStub, build_event, parse_response
from comfyserve.localstack.resolver_pool import Resolver
from comfyserve.service.completion import Completion
from comfyserve.service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW: dict[str, Any] = json.loads((ROOT / "examples" / "image_only.json").read_text())
REGION = "us-east-1"
TENANT = "benchkeyid"  # the API key id API Gateway would put in the request context
SAVED_IMAGES = sum(1 for node in WORKFLOW.values() if node["class_type"] == "SaveImage")

# The fewest requests each operation needs, and why; anything above is an avoidable round trip.
SUBMIT_MINIMUM = {"PutItem": 1, "SendMessage": 1, "PutEvents": 1, "UpdateItem": 1}
SUBMIT_WHY = {
    "PutItem": "the job record (conditional create), owing its dispatch",
    "UpdateItem": "the dispatch done (message and JobQueued out): the job leaves the reconciler's index",
    "SendMessage": "the job message",
    "PutEvents": "JobQueued",
    "GetQueueAttributes": "backlog depth, read once per backlog_cache_s (first submit, then amortized)",
}
JOB_MINIMUM = {
    "ReceiveMessage": 1,
    "GetItem": 1,
    "UpdateItem": 1,
    "PutEvents": 1,
    "PutObject": SAVED_IMAGES + 1,
    "DeleteMessage": 1,
}
JOB_WHY = {
    "ReceiveMessage": "one long-poll receive per message (one job at a time: a batch would hold others' jobs)",
    "GetItem": "the record (workflow, attempts, cancel flag) before the conditional claim",
    "UpdateItem": "the claim queued → running (conditional); the final state is the completion's",
    "PutEvents": "JobStarted",
    "PutObject": f"{SAVED_IMAGES} images, then manifest.json (its Object Created event starts the completion)",
    "DeleteMessage": "the acknowledgement",
    "ChangeMessageVisibility": "heartbeat: one per visibility_timeout_s / 3 of running (a worker-wide timer)",
}
# Lambda ``completion`` per manifest (comfyserve.service.completion), run here in process on each manifest put.
COMPLETION_MINIMUM = {"GetObject": 1, "UpdateItem": 2, "PutEvents": 1}
COMPLETION_WHY = {
    "GetObject": "the manifest",
    "UpdateItem": "running → succeeded with final_event pending (conditional), then final_event published",
    "PutEvents": "JobSucceeded, once (deterministic event id)",
}


class RequestCounter:
    """botocore hooks: HTTP requests by operation (``before-send``, so retries would count too) and their round
    trips (to ``response-received``: moto's service time plus HTTP and parsing); a request that would leave
    loopback is refused before it is sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sending = threading.local()
        self._calls: Counter[str] = Counter()
        self._seconds: dict[str, float] = {}

    def register(self, session: boto3.Session) -> None:
        session.events.register("before-send", self._sent)
        session.events.register("response-received", self._received)

    def _sent(self, event_name: str, request: Any, **_: Any) -> None:
        host = urlsplit(request.url).hostname
        if host not in ("127.0.0.1", "localhost"):
            raise RuntimeError(f"refusing a request to {host}: this benchmark only talks to moto on loopback")
        with self._lock:
            self._calls[event_name.rsplit(".", 1)[-1]] += 1
        self._sending.started = time.perf_counter()

    def _received(self, event_name: str, **_: Any) -> None:
        elapsed = time.perf_counter() - self._sending.started
        name = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self._seconds[name] = self._seconds.get(name, 0.0) + elapsed

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._calls)

    def state(self) -> tuple[Counter[str], dict[str, float]]:
        with self._lock:
            return Counter(self._calls), dict(self._seconds)

    def round_trips(self, since: tuple[Counter[str], dict[str, float]]) -> dict[str, Any]:
        """Mean round trip by operation since ``since``, and the seconds all requests took together."""
        calls, seconds = self.state()
        spent = {name: seconds[name] - since[1].get(name, 0.0) for name in calls - since[0]}
        mean_ms = {name: round(spent[name] / (calls - since[0])[name] * 1000, 3) for name in sorted(spent)}
        return {"mean_ms": mean_ms, "total_s": round(sum(spent.values()), 3)}


@contextmanager
def aws_emulator() -> Iterator[str]:
    with moto_server(REGION) as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint  # aws_service's clients, as against any emulator
        try:
            yield endpoint
        finally:
            os.environ.pop("AWS_ENDPOINT_URL", None)


class AwsWorld:
    """The resources, one counted session, and the clients a worker process of its own would have."""

    def __init__(self, counter: RequestCounter) -> None:
        self.session = boto3.Session(region_name=REGION)
        counter.register(self.session)
        self.s3, self.sqs = self.client("s3"), self.client("sqs")
        self.dynamodb, self.events = self.client("dynamodb"), self.client("events")
        self.resources: AwsResources = provision(self.s3, self.sqs, self.dynamodb, self.events, "bench-aws")
        self.subscriber_url = self._subscribe()

    def client(self, service: str) -> Any:
        config = Config(signature_version="s3v4") if service == "s3" else Config()
        return self.session.client(service, config=config)  # type: ignore[call-overload]

    def _subscribe(self) -> str:
        """A rule delivering every comfyserve event to an SQS queue, read back to check each job's events."""
        url: str = self.sqs.create_queue(QueueName="bench-aws-subscriber")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bus = self.resources.bus
        self.events.put_rule(Name="all", EventBusName=bus, EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
        self.events.put_targets(Rule="all", EventBusName=bus, Targets=[{"Id": "subscriber", "Arn": arn}])
        return url

    def names(self) -> AwsResourceNames:
        res = self.resources
        return AwsResourceNames(bucket=res.bucket, queue_url=res.queue.queue_url, table=res.table, event_bus=res.bus)

    def events_by_job(self) -> dict[str, Counter[JobEventType]]:
        seen: dict[str, Counter[JobEventType]] = {}
        while True:
            response = self.sqs.receive_message(QueueUrl=self.subscriber_url, MaxNumberOfMessages=10)
            messages = response.get("Messages", [])
            if not messages:
                return seen
            for message in messages:
                detail = json.loads(message["Body"])["detail"]
                seen.setdefault(detail["job_id"], Counter())[JobEventType(detail["type"])] += 1
            self.sqs.delete_message_batch(
                QueueUrl=self.subscriber_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


def profile_key(calls: Counter[str]) -> str:
    return " ".join(f"{name}={count}" for name, count in sorted(calls.items()))


def call_figures(profiles: list[Counter[str]], minimum: dict[str, int], why: dict[str, str]) -> dict[str, Any]:
    """The first profile, the steady one (the most common after the first), means, and a verdict per operation."""
    first, rest = profiles[0], profiles[1:] or profiles[:1]
    shapes = Counter(profile_key(p) for p in rest)
    steady_key, steady_count = shapes.most_common(1)[0]
    steady = next(p for p in rest if profile_key(p) == steady_key)
    total: Counter[str] = sum(profiles, Counter())
    operations = sorted(set(minimum) | set(total))
    excess = {name: steady.get(name, 0) - minimum.get(name, 0) for name in operations}
    verdict = {
        name: f"{'minimum' if excess[name] == 0 else f'{excess[name]:+d} against the minimum'} "
        f"({steady.get(name, 0)} in the steady state): {why.get(name, 'not expected')}"
        for name in operations
    }
    return {
        "first": dict(sorted(first.items())),
        "steady_state": dict(sorted(steady.items())),
        "steady_state_share": round(steady_count / len(rest), 3),
        "mean": {name: round(count / len(profiles), 3) for name, count in sorted(total.items())},
        "profiles": dict(shapes.most_common()),
        "minimum": minimum,
        "avoidable_in_steady_state": sum(max(0, n) for n in excess.values()),
        "verdict": verdict,
    }


def submit_jobs(world: AwsWorld, counter: RequestCounter, count: int) -> tuple[list[str], dict[str, Any]]:
    """POST /v1/jobs ``count`` times through the route table, as API Gateway would invoke the api function."""
    settings = ServiceSettings(auth="api_gateway")
    service = aws_service(world.names(), settings, catalog=Catalog.packaged(), session=world.session)
    app: Resolver = build_app(service, ApiGatewayAuthenticator())
    body = json.dumps({"workflow": WORKFLOW}).encode()
    headers = [("Content-Type", "application/json"), ("x-api-key", "redacted")]
    job_ids: list[str] = []
    samples: list[float] = []
    profiles: list[Counter[str]] = []
    since = counter.state()
    for _ in range(count):
        event = build_event("POST", "/v1/jobs", "", headers, body, "203.0.113.7", identity={"apiKeyId": TENANT})
        before = counter.snapshot()
        started = time.perf_counter()
        response = parse_response(app.resolve(event, LambdaContextStub()))
        samples.append(time.perf_counter() - started)
        profiles.append(counter.snapshot() - before)
        if response.status != 202:
            raise RuntimeError(f"submit answered {response.status}: {response.body[:300]!r}")
        job_ids.append(json.loads(response.body)["job_id"])
    latency = {
        "submits": count,
        "first_ms": round(samples[0] * 1000, 3),
        **summary_ms(samples),
        "backlog_cache_s": settings.backlog_cache_s,
    }
    round_trips = counter.round_trips(since)
    round_trips["share_of_submit_time"] = round(round_trips["total_s"] / sum(samples), 3)
    requests = call_figures(profiles, SUBMIT_MINIMUM, SUBMIT_WHY)
    return job_ids, {"latency": latency, "requests": requests, "round_trips": round_trips}


class ManifestEvents:
    """The S3 blob store, remembering the manifest keys put (the "Object Created" events the cloud would send)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._keys: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> Any:
        info = self.inner.put(key, data, content_type)
        if parse_manifest_key(key) is not None:
            self._keys.append(key)
        return info

    def take(self) -> list[str]:
        keys, self._keys = self._keys, []
        return keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def run_worker(world: AwsWorld, counter: RequestCounter, count: int, timeout_s: float) -> dict[str, Any]:
    """The worker loop's body (``Worker.poll``) until ``count`` jobs finished, counting requests per poll."""
    from comfyserve.nodes import builtin_registry
    from comfyserve.worker.builtin_backend import BuiltinBackend
    from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings

    loading = time.perf_counter()
    registry = builtin_registry()
    ports = WorkerPorts(
        S3BlobStore(world.client("s3"), world.resources.bucket),
        SqsJobQueue(world.client("sqs"), world.resources.queue.queue_url, world.resources.queue.dead_letter_url),
        DynamoJobStore(world.client("dynamodb"), world.resources.table),
        EventBridgeBus(world.client("events"), world.resources.bus),
    )
    backend = BuiltinBackend(registry)
    manifests = ManifestEvents(ports.blobs)
    ports = WorkerPorts(manifests, ports.queue, ports.store, ports.bus)
    completion = Completion(ports.store, ports.bus, ports.blobs)
    completion_profiles: list[Counter[str]] = []
    finished = {Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED}
    outcomes: Counter[Outcome] = Counter()
    profiles: list[Counter[str]] = []
    samples: list[float] = []
    idle_polls = 0
    with tempfile.TemporaryDirectory(prefix="bench-aws-") as work_dir:
        worker = Worker(ports, backend, WorkerSettings(work_dir=Path(work_dir), receive_wait_s=1))
        cold_start_s = time.perf_counter() - loading
        since = counter.state()
        started = time.perf_counter()
        while sum(outcomes[o] for o in finished) < count and time.perf_counter() - started < timeout_s:
            before = counter.snapshot()
            polled = time.perf_counter()
            results = worker.poll()
            if results:
                samples.append(time.perf_counter() - polled)
                profiles.append(counter.snapshot() - before)
            for key in manifests.take():  # what S3 → EventBridge → Lambda completion does in the cloud
                before = counter.snapshot()
                completion.on_object_created(key)
                completion_profiles.append(counter.snapshot() - before)
            idle_polls += not results
            outcomes.update(results)
        elapsed = time.perf_counter() - started
        round_trips = counter.round_trips(since)
        backend.close()
    return {
        "worker_start_s": round(cold_start_s, 3),
        "processed": len(profiles),
        "outcomes": {outcome.value: n for outcome, n in outcomes.items()},
        "idle_polls": idle_polls,
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(outcomes[Outcome.SUCCEEDED] / elapsed, 1),
        "per_job": summary_ms(samples) if samples else {},
        "requests": call_figures(profiles, JOB_MINIMUM, JOB_WHY) if profiles else {},
        "completion_requests": (
            call_figures(completion_profiles, COMPLETION_MINIMUM, COMPLETION_WHY) if completion_profiles else {}
        ),
        "round_trips": {**round_trips, "share_of_worker_time": round(round_trips["total_s"] / elapsed, 3)},
    }


def check_jobs(world: AwsWorld, job_ids: list[str]) -> tuple[dict[str, int], list[float]]:
    """Each job succeeded once: its record, its events (one JobStarted, one JobSucceeded), nothing left queued;
    and the execution times the worker recorded."""
    store = DynamoJobStore(world.dynamodb, world.resources.table)
    records = [store.get_by_id(job_id) for job_id in job_ids]
    succeeded = [r for r in records if r is not None and r.status is JobStatus.SUCCEEDED]
    events = world.events_by_job()
    queue = SqsJobQueue(world.sqs, world.resources.queue.queue_url, world.resources.queue.dead_letter_url)
    dead = queue.dead_letters
    checks = {
        "succeeded": len(succeeded),
        "lost": len(job_ids) - len(succeeded),
        "attempts_over_1": sum(1 for r in succeeded if r.attempts != 1),
        "outputs_not_saved": sum(1 for r in succeeded if len(r.outputs) != SAVED_IMAGES),
        "started_events_not_1": sum(1 for j in job_ids if events.get(j, Counter())[JobEventType.JOB_STARTED] != 1),
        "succeeded_events_not_1": sum(1 for j in job_ids if events.get(j, Counter())[JobEventType.JOB_SUCCEEDED] != 1),
        "left_in_queue": queue.approximate_depth().total,
        "dead_lettered": dead.approximate_depth().total if dead is not None else 0,
    }
    return checks, [r.timings.execution_s or 0.0 for r in succeeded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs to submit and run (default 200)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds the worker may take for them all")
    args = parser.parse_args()
    counter = RequestCounter()
    load_before = os.getloadavg()[0]  # other work on the machine skews these figures: record it
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with aws_emulator():
        world = AwsWorld(counter)
        job_ids, submit = submit_jobs(world, counter, args.jobs)
        worker = run_worker(world, counter, len(job_ids), args.timeout)
        checks, execution = check_jobs(world, job_ids)
    write_results(
        "aws_submit",
        {
            "backend": "moto ThreadedMotoServer, same process, loopback HTTP",
            "workflow": "examples/image_only.json",
            "submit": submit,
            "worker": {**worker, "execution": summary_ms(execution) if execution else {}, "checks": checks},
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
    )
    failed = {name: n for name, n in checks.items() if name != "succeeded" and n}
    if failed or checks["succeeded"] != len(job_ids):
        raise SystemExit(f"jobs lost, duplicated or left behind: {failed}")


if __name__ == "__main__":
    main()
