"""The job service over the local adapters when a dependency fails or requests race."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from comfyserve.api.app import build_app
from comfyserve.api.auth import ApiKeyAuthenticator
from comfyserve.contracts.events import JobEvent
from comfyserve.contracts.jobs import JobStatus, QueueMessage
from comfyserve.localstack.resolver_pool import ResolverPool
from comfyserve.service.job_service import JobService
from comfyserve.service.models import JobSubmission
from tests.api_stack import KEYS, Stack, error_body, make_stack, workflow
from tests.apigw import resolve, rest_event


class BrokenQueue:
    """A queue whose sends fail (the depth still reads)."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def send(self, message: QueueMessage) -> str:
        raise ConnectionError("queue endpoint unreachable")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class BrokenBus:
    def publish(self, event: JobEvent) -> None:
        raise ConnectionError("bus endpoint unreachable")


def rewired(stack: Stack, **ports: Any) -> Stack:
    service = JobService(dataclasses.replace(stack.service.deps, **ports))
    app = build_app(service, ApiKeyAuthenticator({key: tenant for tenant, key in KEYS.items()}))
    return dataclasses.replace(stack, service=service, app=app)


def test_enqueue_failure_is_503_and_the_job_does_not_stay_queued(tmp_path: Path) -> None:
    base = make_stack(tmp_path)
    stack = rewired(base, queue=BrokenQueue(base.queue))

    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow()})

    assert response.status == 503 and response.header("Retry-After") == "1"
    [record] = stack.jobs.list("tenant-a")[0]
    assert response.json() == error_body(
        "service_unavailable", "The job queue is unavailable", f"job {record.job_id} was not queued"
    )
    assert record.status is JobStatus.FAILED and record.error is not None and not record.dispatch_pending
    assert (record.error.type, record.error.message) == (
        "enqueue_failed",
        "the job could not be queued: ConnectionError",
    )
    assert stack.events.events() == []


def test_a_lost_event_does_not_fail_an_accepted_job(tmp_path: Path) -> None:
    stack = rewired(make_stack(tmp_path), events=BrokenBus())

    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow()})

    assert response.status == 202
    record = stack.jobs.get("tenant-a", response.json()["job_id"])
    assert record is not None and record.status is JobStatus.QUEUED
    assert record.dispatch_pending is True  # the event is owed: the reconciler publishes it
    assert stack.queue.approximate_depth().visible == 1


def test_racing_submits_with_one_idempotency_key_make_one_job(tmp_path: Path) -> None:
    stack = make_stack(tmp_path)
    request = JobSubmission.model_validate(
        {"workflow": workflow(), "inputs": {"x": {"base64": "iVBORw0KGgo="}}, "metadata": {"n": 1}}
    )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: stack.service.submit("tenant-a", request, "race-key"), range(8)))

    assert len({r.record.job_id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert len(stack.jobs.list("tenant-a")[0]) == 1
    assert stack.queue.approximate_depth().visible == 1
    job_id = results[0].record.job_id
    assert all(key.startswith(f"inputs/tenant-a/{job_id}/") for key in stack.blobs.list())
    assert len(stack.blobs.list()) == 1  # the losers removed their claim checks


def test_the_route_table_serves_threads_correctly(tmp_path: Path) -> None:
    """A resolver holds the request it resolves; served as the local server serves it (a pool lending one route
    table per request in flight), concurrent requests must not be mixed up."""
    stack = make_stack(tmp_path)
    resolvers = ResolverPool(stack.new_app)

    def call(method: str, url: str, tenant: str, **kw: Any) -> Any:
        return resolve(resolvers, rest_event(method, url, headers={"x-api-key": KEYS[tenant]}, **kw)).json()

    def submit_and_read(seed: int) -> tuple[int, str, Any]:
        tenant = "tenant-a" if seed % 2 else "tenant-b"
        job_id = call("POST", "/v1/jobs", tenant, body={"workflow": workflow(seed=seed)})["job_id"]
        return seed, tenant, call("GET", f"/v1/jobs/{job_id}", tenant)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit_and_read, range(40)))

    for seed, tenant, view in results:
        record: Any = stack.jobs.get(tenant, view["job_id"])
        assert record.workflow["3"]["inputs"]["seed"] == seed
