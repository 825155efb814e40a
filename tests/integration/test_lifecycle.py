"""Every accepted job reaches a terminal state: a crash between the submit's two writes (record, then message)
and a bus that refuses ``Job Queued`` are finished by the reconciler, on both adapter sets (SQLite; DynamoDB,
SQS and EventBridge on the moto server); a message that exhausts its receives fails its job once, locally as
the cloud's ``dead_letter`` Lambda does."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from comfyserve.adapters.local.sqlite_jobs import UNDISPATCHED_SQL
from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobStatus, QueueMessage, utc_now
from comfyserve.localstack.lifecycle import Lifecycle
from comfyserve.localstack.stack import LocalStack
from comfyserve.ports import JobQueue
from comfyserve.service.dead_letter import DEAD_LETTER_ERROR, DeadLetterOutcome
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.job_service import JobService
from comfyserve.service.models import JobSubmission
from comfyserve.service.reconcile import Reconciler, queued_event_id
from comfyserve.service.settings import ServiceSettings
from tests.api_stack import tiny_catalog, workflow
from tests.integration.conftest import AdapterSet, LocalAdapters
from tests.integration.stack_helpers import IMAGE_PACKS, Api, wait_workflow
from tests.integration.test_service_local import BrokenBus

GRACE_S = 60.0
PROCESS_NODES = Path(__file__).resolve().parent / "process_nodes"


class Crash(BaseException):
    """The process dies here: nothing after this line runs (no ``except Exception`` sees it)."""


class CrashingQueue:
    """The queue of a process that dies just before its message is sent."""

    def __init__(self, queue: JobQueue) -> None:
        self._queue = queue

    def send(self, message: QueueMessage) -> str:
        raise Crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


def service(adapters: AdapterSet, queue: Any, events: Any = None) -> JobService:
    deps = ServiceDeps(
        blobs=adapters.blobs,
        queue=queue,
        jobs=adapters.store,
        events=events or adapters.bus,
        catalog=tiny_catalog(),
        settings=ServiceSettings(backlog_cache_s=60),
    )
    return JobService(deps)


def reconciler(adapters: AdapterSet, queue: JobQueue, after_s: float) -> Reconciler:
    return Reconciler(
        adapters.store, queue, adapters.bus, grace_s=GRACE_S, clock=lambda: utc_now() + timedelta(seconds=after_s)
    )


def submission() -> JobSubmission:
    return JobSubmission.model_validate({"workflow": workflow()})


def test_a_crash_between_the_record_and_the_message_is_dispatched_once(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    with pytest.raises(Crash):
        service(adapters, CrashingQueue(queue)).submit("acme", submission())
    [record] = adapters.store.list("acme")[0]
    assert (record.status, record.dispatch_pending) == (JobStatus.QUEUED, True)
    assert queue.approximate_depth().total == 0 and adapters.published() == []

    assert reconciler(adapters, queue, after_s=GRACE_S / 2).run().resent == []  # within the grace: a submit at work
    report = reconciler(adapters, queue, after_s=GRACE_S + 1).run()
    again = reconciler(adapters, queue, after_s=GRACE_S + 1).run()

    assert (report.resent, report.announced, report.failed) == ([record.job_id], [record.job_id], [])
    assert (again.resent, again.announced) == ([], [])  # idempotent: the flag is cleared
    [message] = queue.receive(max_messages=10)
    assert (message.message().job_id, message.message().tenant) == (record.job_id, "acme")
    [event] = adapters.published()
    assert (event.type, event.job_id, event.time) == (JobEventType.JOB_QUEUED, record.job_id, record.created_at)
    assert event.event_id == queued_event_id(record.job_id)  # as the submit's own would have been
    stored = adapters.store.get_by_id(record.job_id)
    assert stored is not None and not stored.dispatch_pending and stored.status is JobStatus.QUEUED


def test_a_refused_event_is_owed_then_published_without_a_second_job(adapters: AdapterSet) -> None:
    queue, _ = adapters.queue(), adapters.bus  # the bus's subscriber exists before anything is published
    submitted = service(adapters, queue, events=BrokenBus()).submit("acme", submission())
    assert submitted.record.status is JobStatus.QUEUED
    assert queue.approximate_depth().visible == 1 and adapters.published() == []

    # The worker claimed it meanwhile: the reconciler sends no second message, only the owed event.
    adapters.store.transition(submitted.record.job_id, {JobStatus.QUEUED}, JobStatus.RUNNING)
    report = reconciler(adapters, queue, after_s=GRACE_S + 1).run()

    assert (report.resent, report.announced) == ([], [submitted.record.job_id])
    assert queue.approximate_depth().visible == 1
    assert [(e.type, e.job_id) for e in adapters.published()] == [(JobEventType.JOB_QUEUED, submitted.record.job_id)]


def test_a_bus_still_down_leaves_the_event_owed(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    with pytest.raises(Crash):
        service(adapters, CrashingQueue(queue)).submit("acme", submission())
    down = Reconciler(adapters.store, queue, BrokenBus(), grace_s=0.0, clock=lambda: utc_now() + timedelta(seconds=1))

    report = down.run()

    [record] = adapters.store.list("acme")[0]
    assert report.failed == [record.job_id] and record.dispatch_pending  # the message went; the event is owed
    assert queue.approximate_depth().visible == 1


def submit_and_die(data_dir: Path) -> None:
    """A submit in a process killed between its two writes (no cleanup of any kind runs)."""
    from tests.integration.conftest import LocalAdapters as Adapters

    adapters = Adapters(data_dir)
    real = adapters.queue(max_receives=3)

    class DyingQueue(CrashingQueue):
        def send(self, message: QueueMessage) -> str:
            os._exit(137)

    service(adapters, DyingQueue(real)).submit("acme", submission())


def test_a_killed_submit_process_leaves_a_job_the_reconciler_dispatches(tmp_path: Path) -> None:
    process = multiprocessing.get_context("spawn").Process(target=submit_and_die, args=(tmp_path,))
    process.start()
    process.join(60)
    assert process.exitcode == 137

    adapters = LocalAdapters(tmp_path)
    queue = adapters.queue()
    [record] = adapters.store.list("acme")[0]
    assert record.dispatch_pending and record.status is JobStatus.QUEUED
    report = reconciler(adapters, queue, after_s=GRACE_S + 1).run()
    assert report.resent == [record.job_id]
    assert [m.message().job_id for m in queue.receive(max_messages=10)] == [record.job_id]


def test_the_sqlite_store_reads_undispatched_jobs_from_its_partial_index(local_adapters: LocalAdapters) -> None:
    local_adapters.store.list("acme")  # creates the file
    with sqlite3.connect(local_adapters.root / "jobs.sqlite") as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + UNDISPATCHED_SQL, ("x", 5)).fetchall()
    assert [row[3] for row in plan] == ["SEARCH jobs USING INDEX jobs_undispatched (order_key<?)"]


def test_a_message_that_exhausts_its_receives_fails_its_job_once_locally(local_adapters: LocalAdapters) -> None:
    adapters = local_adapters
    queue = adapters.queue(max_receives=2)
    job_id = service(adapters, queue).submit("acme", submission()).record.job_id
    lifecycle = Lifecycle(adapters.store, queue, adapters.bus, adapters.blobs, grace_s=GRACE_S)
    adapters.store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING, attempts=1, started_at=utc_now())
    for _ in range(2):  # a worker that dies each time it has the message (never deleted)
        assert len(queue.receive(visibility_timeout_s=0)) == 1
    assert queue.receive(visibility_timeout_s=0) == []  # the third receive moves it to the dead-letter queue

    first = lifecycle.run_once()
    second = lifecycle.run_once()

    assert first.dead_letters == [DeadLetterOutcome.FAILED] and second.dead_letters == []
    record = adapters.store.get_by_id(job_id)
    assert record is not None and record.status is JobStatus.FAILED and record.error is not None
    assert record.error.type == DEAD_LETTER_ERROR
    assert record.error.message.startswith("the job's message was received 2 times without the job finishing")
    failed = [e for e in adapters.published() if e.type is JobEventType.JOB_FAILED]
    assert [e.job_id for e in failed] == [job_id]
    assert queue.approximate_depth().total == 0 and queue.dead_letters is not None
    assert queue.dead_letters.approximate_depth().total == 0


def test_a_poison_job_on_the_local_stack_fails_once_from_the_dead_letter_queue(tmp_path: Path) -> None:
    """The whole local path: the job kills its worker at every receive, the supervisor replaces the worker, the
    queue moves the message after ``max_receives``, and the stack's lifecycle thread fails the job once."""
    poison = wait_workflow(0.0, steps=1)
    poison["2"] = {"class_type": "ProcessTestKillWorker", "inputs": {"image": ["1", 0]}}
    with LocalStack(
        tmp_path / "data",
        port=0,
        workers=1,
        api_keys={"alice": "alice-key"},
        custom_nodes=[PROCESS_NODES],
        node_packs=IMAGE_PACKS,
        visibility_timeout_s=1,
        max_receives=2,
    ) as stack:
        stack.wait_ready()
        alice = Api(stack.url, "alice-key")
        job_id = alice.submit(poison)

        view = alice.wait_status(job_id, timeout_s=90)

        assert view["status"] == "failed" and view["error"]["type"] == DEAD_LETTER_ERROR
        assert view["error"]["message"].startswith("the job's message was received 2 times")
        adapters = stack.adapters
        failed = [e for e in adapters.bus.events() if e.type is JobEventType.JOB_FAILED and e.job_id == job_id]
        assert len(failed) == 1
        assert adapters.queue.approximate_depth().total == 0
        assert adapters.queue.dead_letters is not None and adapters.queue.dead_letters.approximate_depth().total == 0
