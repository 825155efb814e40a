"""The real ``comfyserve worker`` process on the session's moto server: the entrypoint preloads, warms up,
processes jobs (long polling, task protection, health check) and drains on SIGTERM; repeated ``kill -9`` with a
second worker leaves every job completed exactly once; a Spot-style stop hands the job to another worker; a
job that ignores the stop cannot hold its worker past the drain window and is redelivered; a poison job that
kills every worker that takes it ends in the dead-letter queue and fails once.

The cloud's completion path runs as it does on AWS: the manifest's S3 "Object Created" event goes through
EventBridge (default bus, a rule on manifest keys) to an SQS queue standing in for the Lambda trigger, and the
test hands every delivered event (duplicates included) to the completion use case, as Lambda ``completion`` does.
Tiny no-model workflows (the stack test nodes) keep each job to about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from comfyserve.adapters.aws.emulator import offline_environment
from comfyserve.adapters.aws.provision import create_bucket
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.engine.deadline import EXIT_MARGIN_S
from comfyserve.model_store.sync import sync
from comfyserve.service.completion import Completion
from comfyserve.service.dead_letter import DEAD_LETTER_ERROR, DeadLetterOutcome, DeadLetters
from tests.integration.conftest import REGION, AwsAdapters
from tests.integration.stack_helpers import ROOT, STACK_NODES, wait_for, wait_workflow
from tests.unit.test_ecs_protection import FakeAgent

TENANT = "acme"
PRELOADED = "upscale_models/tiny.pth"  # a folder without a loader: preloading makes the file local
ENTRYPOINT = Path(sys.executable).parent / "comfyserve"  # the console script the image's ENTRYPOINT runs
PROCESS_NODES = Path(__file__).resolve().parent / "process_nodes"  # nodes that kill their worker or ignore a stop
TERMINAL_EVENTS = {JobEventType.JOB_SUCCEEDED, JobEventType.JOB_FAILED, JobEventType.JOB_CANCELLED}


@dataclass
class Cloud:
    """One deployment's resources on moto, the completion path, and the worker processes started on it."""

    adapters: AwsAdapters
    queue: SqsJobQueue
    s3_events_url: str
    root: Path
    manifest_writes: Counter[str] = field(default_factory=Counter)  # job id -> manifest "Object Created" events
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def environment(self, name: str, **settings: str) -> dict[str, str]:
        a = self.adapters
        env = {key: value for key, value in os.environ.items() if not key.startswith(("COMFYSERVE_", "AWS_"))}
        env.update(offline_environment(REGION))
        env.update(
            {
                "AWS_ENDPOINT_URL": a.clients.endpoint,
                "COMFYSERVE_BUCKET": a.blobs.bucket,
                "COMFYSERVE_TABLE": a.store.table_name,
                "COMFYSERVE_QUEUE_URL": self.queue.queue_url,
                "COMFYSERVE_EVENT_BUS": a.bus.bus_name,
                "COMFYSERVE_MODEL_ROOT": str(self.root / "models"),
                "COMFYSERVE_WORK_DIR": str(self.root / name),
                "COMFYSERVE_CUSTOM_NODES": f"{STACK_NODES},{PROCESS_NODES}",
                "COMFYSERVE_WORKER_ID": name,
                "COMFYSERVE_RECEIVE_WAIT_S": "1",
                "COMFYSERVE_VISIBILITY_TIMEOUT_S": "3",
                "COMFYSERVE_DRAIN_TIMEOUT_S": "10",
                "LOG_LEVEL": "INFO",
                "PYTHONPATH": str(ROOT),
            }
        )
        env.update(settings)
        return env

    def start_worker(self, name: str, **settings: str) -> subprocess.Popen[bytes]:
        (self.root / "models").mkdir(exist_ok=True)
        log = (self.root / f"{name}.log").open("ab")
        command = [str(ENTRYPOINT), "worker"]
        process = subprocess.Popen(command, env=self.environment(name, **settings), stdout=log, stderr=log, cwd=ROOT)
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def submit(self, workflow: dict[str, Any]) -> str:
        record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow=workflow)
        self.adapters.store.create(record)
        self.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
        return record.job_id

    def pump(self) -> None:
        """Hand every manifest "Object Created" event delivered so far to the completion use case."""
        a, completion = self.adapters, Completion(self.adapters.store, self.adapters.bus, self.adapters.blobs)
        while messages := a.sqs.receive_message(QueueUrl=self.s3_events_url, MaxNumberOfMessages=10).get("Messages"):
            for message in messages:
                key = json.loads(message["Body"])["detail"]["object"]["key"]
                self.manifest_writes[key.split("/")[2]] += 1
                completion.on_object_created(key)
                a.sqs.delete_message(QueueUrl=self.s3_events_url, ReceiptHandle=message["ReceiptHandle"])

    def record(self, job_id: str) -> JobRecord:
        record = self.adapters.store.get_by_id(job_id)
        assert record is not None
        return record

    def wait_finished(self, job_ids: list[str], timeout_s: float = 60.0) -> list[JobRecord]:
        def probe() -> list[JobRecord] | None:
            self.pump()
            records = [self.record(job_id) for job_id in job_ids]
            done = all(r.status.is_terminal and r.final_event == "published" for r in records)
            return records if done else None

        return wait_for(probe, timeout_s, f"{len(job_ids)} job(s) to finish")

    def dead_letters(self) -> list[DeadLetterOutcome]:
        """Hand every message in the dead-letter queue to the dead-letter use case, as Lambda ``dead_letter``
        does."""
        a, dlq = self.adapters, self.queue.dead_letters
        assert dlq is not None
        completion = Completion(a.store, a.bus, a.blobs)
        handler, outcomes = DeadLetters(a.store, a.blobs, completion), []
        while messages := a.sqs.receive_message(
            QueueUrl=dlq.queue_url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        ).get("Messages"):
            for message in messages:
                count = int(message["Attributes"]["ApproximateReceiveCount"])
                outcomes.append(handler.on_dead_letter(message["Body"], count))
                a.sqs.delete_message(QueueUrl=dlq.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return outcomes

    def manifest(self, job_id: str) -> JobManifest:
        return JobManifest.model_validate_json(self.adapters.blobs.get(manifest_key(TENANT, job_id)))


@pytest.fixture
def cloud(aws_adapters: AwsAdapters, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cloud]:
    a = aws_adapters
    # Kills redeliver a job's message: only the poison test lets it reach the dead-letter queue.
    queue = a.queue(max_receives=2 if "poison" in request.node.name else 10)
    a.s3.put_bucket_notification_configuration(
        Bucket=a.blobs.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    url = a.sqs.create_queue(QueueName=f"{a.prefix}-s3-events")["QueueUrl"]
    arn = a.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [a.blobs.bucket]}, "object": {"key": [{"suffix": "/manifest.json"}]}},
    }
    a.events.put_rule(Name=f"{a.prefix}-manifests", EventPattern=json.dumps(pattern))
    a.events.put_targets(Rule=f"{a.prefix}-manifests", Targets=[{"Id": "completion", "Arn": arn}])
    a.bus  # noqa: B018 (the bus and its subscriber queue exist before a worker publishes)
    world = Cloud(a, queue, url, tmp_path)
    yield world
    for process in world.processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    server = FakeAgent()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def cold_start(log: str) -> dict[str, Any]:
    for line in log.splitlines():
        if line.startswith("{") and '"cold start"' in line:
            document: dict[str, Any] = json.loads(line)["cold_start"]
            return document
    raise AssertionError(f"no cold start line in the worker's log:\n{log[-3000:]}")


def lifecycles(cloud: Cloud) -> dict[str, Counter[JobEventType]]:
    """Each job's lifecycle events on the bus, throttled progress left out (read once: reading drains the
    subscriber queue)."""
    events: dict[str, Counter[JobEventType]] = {}
    for event in cloud.adapters.published():
        if event.type is not JobEventType.JOB_PROGRESS:
            events.setdefault(event.job_id, Counter())[event.type] += 1
    return events


def protection_states(agent: FakeAgent, worker: str) -> list[bool]:
    return [body["ProtectionEnabled"] for path, body in agent.requests if path.startswith(f"/api/{worker}/")]


def test_the_entrypoint_preloads_warms_up_processes_jobs_and_drains(cloud: Cloud, agent: FakeAgent) -> None:
    models_bucket = f"{cloud.adapters.prefix}-models"
    create_bucket(cloud.adapters.s3, models_bucket)
    weights = os.urandom(256 * 1024)
    cloud.adapters.s3.put_object(
        Bucket=models_bucket, Key=PRELOADED, Body=weights, Metadata={"sha256": hashlib.sha256(weights).hexdigest()}
    )
    sync(cloud.adapters.s3, models_bucket, "inventory.json")
    warmup = cloud.root / "warmup.json"
    warmup.write_text(json.dumps(wait_workflow(0.3, steps=3, prefix="warmup")))

    worker = cloud.start_worker(
        "w1",
        COMFYSERVE_RECEIVE_WAIT_S="5",
        COMFYSERVE_DRAIN_TIMEOUT_S="15",
        COMFYSERVE_MODELS_BUCKET=models_bucket,
        COMFYSERVE_PRELOAD=PRELOADED,
        COMFYSERVE_WARMUP_WORKFLOW=str(warmup),
        ECS_AGENT_URI=f"{agent.uri.rsplit('/', 1)[0]}/w1",
    )
    wait_for(lambda: "cold start" in cloud.log("w1"), 60, "the worker's cold start")
    parts = cold_start(cloud.log("w1"))
    assert (cloud.root / "models" / PRELOADED).read_bytes() == weights  # copied from S3 to the shared root
    assert set(parts["model_load_s"]) == {"s3"} and parts["model_load_s"]["s3"] > 0
    assert parts["warmup_s"] >= 0.3 and not (cloud.root / "w1" / "warmup").exists()
    assert not agent.requests  # nothing protected before the first job
    catalog = json.loads(cloud.adapters.blobs.get("catalog/object_info.json"))  # what the API validates against
    assert {"StackTestWait", "ProcessTestKillWorker", "SaveImage"} <= set(catalog)
    time.sleep(0.5)  # a long poll is waiting: the job arrives during it
    submitted = time.monotonic()
    job_id = cloud.submit(wait_workflow(0.2, steps=2))

    [record] = cloud.wait_finished([job_id], timeout_s=30)
    latency_s = time.monotonic() - submitted

    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1, record.error
    assert [ref.filename for ref in record.outputs] == ["wait_00001_.png"]
    manifest = cloud.manifest(job_id)
    assert (manifest.status, manifest.worker_id, manifest.backend) == ("succeeded", "w1", "builtin")
    assert latency_s < 4.5  # the long poll returns when the job arrives, not at its end
    assert cloud.manifest_writes == {job_id: 1}
    assert lifecycles(cloud) == {job_id: {JobEventType.JOB_STARTED: 1, JobEventType.JOB_SUCCEEDED: 1}}
    wait_for(lambda: protection_states(agent, "w1") == [True, False], 30, "protection dropped when idle")
    health = subprocess.run([str(ENTRYPOINT), "worker", "--health"], env=cloud.environment("w1"), check=False)
    assert health.returncode == 0  # the image's HEALTHCHECK: the loop touched its liveness file lately
    assert parts["worker_id"] == "w1" and parts["device"] == "cpu" and parts["backend"] == "builtin"
    assert 0 < parts["backend_start_s"] < parts["total_s"]

    # SIGTERM while busy, the job fitting the drain window: it finishes, then the worker leaves.
    second = cloud.submit(wait_workflow(2.0, steps=20, color=7))
    wait_for(lambda: cloud.record(second).status is JobStatus.RUNNING, 30, "the second job to run")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    exited_s = time.monotonic() - signalled
    [drained] = cloud.wait_finished([second], timeout_s=10)
    assert drained.status is JobStatus.SUCCEEDED and drained.attempts == 1
    assert exited_s < 15  # within the drain window
    assert cloud.manifest_writes == {job_id: 1, second: 1}
    assert protection_states(agent, "w1") == [True, False, True, False]
    assert cloud.queue.approximate_depth().total == 0


def test_repeated_kill_9_with_a_second_worker_completes_every_job_exactly_once(cloud: Cloud, agent: FakeAgent) -> None:
    base = agent.uri.rsplit("/", 1)[0]
    down = FakeAgent()
    down.server_close()  # the steady worker asks an agent that is down: its jobs run all the same
    cloud.start_worker("steady", ECS_AGENT_URI=down.uri)
    jobs: list[str] = []
    kills = 0
    for attempt in range(3):
        name = f"doomed{attempt}"
        doomed = cloud.start_worker(name, ECS_AGENT_URI=f"{base}/{name}")
        wait_for(lambda n=name: "cold start" in cloud.log(n), 60, f"{name}'s cold start")
        # Two jobs for two idle workers: while one runs the first, the other receives the second.
        jobs += [cloud.submit(wait_workflow(1.5, steps=15, color=len(jobs) + i)) for i in range(2)]
        wait_for(lambda n=name: True in protection_states(agent, n), 30, f"{name} to claim a job")
        time.sleep(0.3)  # mid-job
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        kills += 1

    records = cloud.wait_finished(jobs, timeout_s=120)

    assert kills == 3
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 6, [r.error for r in records]
    assert sum(r.attempts for r in records) >= 6 + 3  # each killed worker's job ran again
    assert cloud.manifest_writes == dict.fromkeys(jobs, 1)  # one manifest per job
    all_events = lifecycles(cloud)
    for job_id in jobs:
        events = all_events[job_id]
        assert sum(events[kind] for kind in TERMINAL_EVENTS) == events[JobEventType.JOB_SUCCEEDED] == 1
        assert cloud.manifest(job_id).status == "succeeded"
    assert cloud.queue.approximate_depth().total == 0


def test_a_spot_style_stop_mid_job_hands_the_job_to_another_worker(cloud: Cloud, agent: FakeAgent) -> None:
    base = agent.uri.rsplit("/", 1)[0]
    workers = {
        name: cloud.start_worker(name, COMFYSERVE_DRAIN_TIMEOUT_S="0.5", ECS_AGENT_URI=f"{base}/{name}")
        for name in "ab"
    }
    for name in workers:
        wait_for(lambda n=name: "cold start" in cloud.log(n), 60, f"{name}'s cold start")
    job_id = cloud.submit(wait_workflow(6.0, steps=60))
    holder = wait_for(lambda: next((n for n in workers if True in protection_states(agent, n)), None), 30, "a claim")
    other = "b" if holder == "a" else "a"
    time.sleep(0.5)  # mid-job

    signalled = time.monotonic()
    workers[holder].send_signal(signal.SIGTERM)  # the Spot interruption notice: ECS stops the task
    wait_for(lambda: cloud.record(job_id).status is not JobStatus.RUNNING or cloud.record(job_id).attempts == 2)
    released_s = time.monotonic() - signalled
    assert workers[holder].wait(timeout=15) == 0

    [record] = cloud.wait_finished([job_id], timeout_s=60)
    # The 0.5 s window, then interrupted and put back: seconds before the 6 s job could have ended on its own.
    assert released_s < 4, released_s
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 2
    assert cloud.manifest(job_id).worker_id == other
    assert cloud.manifest_writes == {job_id: 1}
    assert lifecycles(cloud) == {job_id: {JobEventType.JOB_STARTED: 2, JobEventType.JOB_SUCCEEDED: 1}}
    assert protection_states(agent, holder) == [True, False]  # dropped on the way out
    workers[other].send_signal(signal.SIGTERM)
    assert workers[other].wait(timeout=15) == 0


def test_a_job_in_a_native_call_cannot_hold_its_worker_and_is_handed_back_at_once(cloud: Cloud) -> None:
    marker = cloud.root / "stubborn-started"
    stubborn = wait_workflow(0.0, steps=1)
    stubborn["2"] = {
        "class_type": "ProcessTestIgnoreStop",
        "inputs": {"image": ["1", 0], "seconds": 300.0, "marker": str(marker)},
    }
    job_id = cloud.submit(stubborn)
    drain_s = 0.5
    # A visibility far longer than the test: the rescuer gets the job only because the holder released it.
    holder = cloud.start_worker("h", COMFYSERVE_DRAIN_TIMEOUT_S=str(drain_s), COMFYSERVE_VISIBILITY_TIMEOUT_S="600")
    wait_for(marker.exists, 60, "the node's native call")

    signalled = time.monotonic()
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=drain_s + EXIT_MARGIN_S + 10) == 1
    exited_s = time.monotonic() - signalled
    assert drain_s + EXIT_MARGIN_S - 0.5 < exited_s < drain_s + EXIT_MARGIN_S + 3, exited_s
    assert "exiting now" in cloud.log("h")
    assert cloud.record(job_id).status is JobStatus.QUEUED  # handed back on its way out

    rescuer = cloud.start_worker("r")  # receives the released message now
    [record] = cloud.wait_finished([job_id], timeout_s=60)
    assert record.status is JobStatus.SUCCEEDED and record.attempts == 2
    assert cloud.manifest(job_id).worker_id == "r" and cloud.manifest_writes == {job_id: 1}
    assert lifecycles(cloud)[job_id][JobEventType.JOB_SUCCEEDED] == 1
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=15) == 0


def test_a_poison_job_that_kills_every_worker_fails_once_from_the_dead_letter_queue(cloud: Cloud) -> None:
    poison = wait_workflow(0.0, steps=1)
    poison["2"] = {"class_type": "ProcessTestKillWorker", "inputs": {"image": ["1", 0]}}
    job_id = cloud.submit(poison)
    first, second = cloud.start_worker("p1"), cloud.start_worker("p2")  # the queue moves it after 2 receives

    assert first.wait(timeout=60) == -signal.SIGKILL
    assert second.wait(timeout=60) == -signal.SIGKILL
    survivor = cloud.start_worker("p3")  # its receive finds the message over the limit: SQS moves it
    wait_for(lambda: cloud.queue.approximate_depth().total == 0, 60, "the message to leave the jobs queue")
    assert cloud.dead_letters() == [DeadLetterOutcome.FAILED]

    [record] = cloud.wait_finished([job_id], timeout_s=10)
    assert record.status is JobStatus.FAILED and record.error is not None
    assert record.error.type == DEAD_LETTER_ERROR and "moved to the dead-letter queue" in record.error.message
    assert cloud.manifest_writes == {job_id: 1} and cloud.manifest(job_id).status == "failed"
    events = lifecycles(cloud)[job_id]
    assert events[JobEventType.JOB_FAILED] == 1 and sum(events[kind] for kind in TERMINAL_EVENTS) == 1
    assert survivor.poll() is None  # the worker that did not receive the poison serves on
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=15) == 0
