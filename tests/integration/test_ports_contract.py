"""One contract for both adapter sets: every parametrised test runs on the local and on the AWS adapters (moto
server over HTTP) and must pass identically. A few tests at the end cover what only one family has."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from pydantic import ValidationError

from comfyserve.adapters.aws.dynamodb import DISPATCH_SHARDS, PARTITION_KEY, TTL_ATTRIBUTE, DynamoJobStore
from comfyserve.adapters.local.blobs import PresignedUrlInvalid
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import (
    InvalidTransition,
    JobError,
    JobRecord,
    JobStatus,
    OutputRef,
    Progress,
    QueueMessage,
    Timings,
    WebhookSpec,
)
from comfyserve.ports import (
    BlobNotFound,
    IdempotencyKeyInUse,
    InvalidCursor,
    InvalidKey,
    JobAlreadyExists,
    JobNotFound,
    ReceiptInvalid,
    TransitionConflict,
)
from tests.integration.conftest import AdapterSet, AwsAdapters, LocalAdapters

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def job(job_id: str, tenant: str = "acme", created: datetime = T0, **fields: object) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        tenant=tenant,
        created_at=created,
        updated_at=created,
        workflow_key=f"jobs/{job_id}/workflow.json",
        metadata={"ratio": 1.5, "count": 2, "tags": ["a", "b"]},
        **fields,  # type: ignore[arg-type]
    )


# --- BlobStore ------------------------------------------------------------------------------------------


def test_blob_put_get_head_list_delete(adapters: AdapterSet) -> None:
    blobs = adapters.blobs
    info = blobs.put("jobs/j1/out/a.png", b"\x89PNG-1", "image/png")
    blobs.put("jobs/j1/out/b.txt", b"text", "text/plain")
    blobs.put("jobs/j2/in.json", b"{}", "application/json")

    assert info.size == 6 and info.etag == hashlib.md5(b"\x89PNG-1").hexdigest()
    assert blobs.get("jobs/j1/out/a.png") == b"\x89PNG-1"
    assert blobs.head("jobs/j1/out/a.png") == info
    assert blobs.head("jobs/j1/out/missing.png") is None
    with pytest.raises(BlobNotFound, match=r"^no blob at key 'jobs/nope'$"):
        blobs.get("jobs/nope")

    assert blobs.list("jobs/j1/") == ["jobs/j1/out/a.png", "jobs/j1/out/b.txt"]
    assert blobs.list("jobs/j1/out/a") == ["jobs/j1/out/a.png"]
    assert blobs.list("jobs/j") == ["jobs/j1/out/a.png", "jobs/j1/out/b.txt", "jobs/j2/in.json"]
    assert blobs.list("other/") == []

    blobs.put("jobs/j1/out/a.png", b"second", "image/png")
    assert blobs.get("jobs/j1/out/a.png") == b"second"
    blobs.delete("jobs/j1/out/a.png")
    blobs.delete("jobs/j1/out/a.png")
    assert blobs.head("jobs/j1/out/a.png") is None
    assert blobs.list("") == ["jobs/j1/out/b.txt", "jobs/j2/in.json"]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty key"),
        ("../etc/passwd", "'..' segment"),
        ("jobs/../../etc", "'..' segment"),
        ("jobs/./a", "'.' segment"),
        ("/etc/passwd", "absolute path"),
        ("jobs\\..\\x", "backslash"),
        ("jobs//a", "empty segment"),
        ("jobs/a/", "empty segment"),
        ("jobs/a\x00b", "control character"),
        ("jobs/a\nb", "control character"),
        ("k" * 1025, "longer than 1024 bytes"),
    ],
)
def test_blob_keys_that_escape_are_rejected(adapters: AdapterSet, key: str, reason: str) -> None:
    blobs = adapters.blobs
    operations = [
        lambda: blobs.put(key, b"x"),
        lambda: blobs.get(key),
        lambda: blobs.head(key),
        lambda: blobs.delete(key),
        lambda: blobs.presigned_get(key),
        lambda: blobs.presigned_put(key),
    ]
    for operation in operations:
        with pytest.raises(InvalidKey) as caught:
            operation()
        assert str(caught.value) == f"invalid blob key {key!r}: {reason}"
    assert blobs.list("") == []


def test_blob_list_prefix_is_validated(adapters: AdapterSet) -> None:
    with pytest.raises(InvalidKey, match=r"'\.\.' segment"):
        adapters.blobs.list("../")


# --- JobQueue -------------------------------------------------------------------------------------------


def message(job_id: str) -> QueueMessage:
    return QueueMessage(job_id=job_id, tenant="acme", workflow_key=f"jobs/{job_id}/workflow.json")


def test_queue_send_receive_delete_and_depth(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    ids = {queue.send(message("j1")), queue.send(message("j2"))}
    assert queue.approximate_depth().visible == 2

    received = queue.receive(max_messages=10, visibility_timeout_s=30)
    assert {m.message_id for m in received} == ids
    assert sorted(m.message().job_id for m in received) == ["j1", "j2"]
    assert [m.receive_count for m in received] == [1, 1]
    depth = queue.approximate_depth()
    assert (depth.visible, depth.in_flight, depth.total) == (0, 2, 2)
    assert queue.receive(max_messages=10) == []

    for m in received:
        queue.delete(m.receipt)
        queue.delete(m.receipt)  # deleting twice is not an error
    assert queue.approximate_depth().total == 0


def test_queue_redelivers_after_visibility_timeout(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    queue.send(message("j1"))
    [first] = queue.receive(visibility_timeout_s=1)
    assert queue.receive() == []
    time.sleep(1.3)
    [second] = queue.receive(visibility_timeout_s=30)
    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt != first.receipt


def test_queue_extend_visibility_and_release(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    queue.send(message("j1"))
    [first] = queue.receive(visibility_timeout_s=1)
    queue.extend_visibility(first.receipt, 10)
    time.sleep(1.3)
    assert queue.receive() == []  # the heartbeat kept it hidden past the first timeout

    queue.release(first.receipt)
    [again] = queue.receive(visibility_timeout_s=30)
    assert (again.message_id, again.receive_count) == (first.message_id, 2)

    queue.delete(again.receipt)
    with pytest.raises(ReceiptInvalid):
        queue.extend_visibility(again.receipt, 10)


def test_queue_moves_message_to_dead_letters_after_max_receives(adapters: AdapterSet) -> None:
    queue = adapters.queue(max_receives=2)
    queue.send(message("poison"))
    counts = [m.receive_count for _ in range(2) for m in queue.receive(visibility_timeout_s=0)]
    assert counts == [1, 2]
    assert queue.receive(visibility_timeout_s=0) == []  # the third attempt moves it

    dead_letters = queue.dead_letters
    assert dead_letters is not None and dead_letters.dead_letters is None
    assert dead_letters.approximate_depth().visible == 1
    assert queue.approximate_depth().total == 0
    [dead] = dead_letters.receive(visibility_timeout_s=30)
    assert dead.message().job_id == "poison"
    dead_letters.delete(dead.receipt)
    assert dead_letters.approximate_depth().total == 0


def test_queue_batch_with_zero_visibility_has_no_duplicates(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    sent = {queue.send(message("j1")), queue.send(message("j2"))}
    received = queue.receive(max_messages=10, visibility_timeout_s=0)
    assert sorted(m.message_id for m in received) == sorted(sent)


def test_queue_rejects_out_of_range_arguments(adapters: AdapterSet) -> None:
    queue = adapters.queue()
    with pytest.raises(ValueError, match=r"^max_messages must be 1-10$"):
        queue.receive(max_messages=11)
    with pytest.raises(ValueError, match=r"^wait_s must be 0-20$"):
        queue.receive(wait_s=21)


# --- JobStore -------------------------------------------------------------------------------------------


def test_job_create_get_and_tenant_isolation(adapters: AdapterSet) -> None:
    store = adapters.store
    record = job("j1", webhook=WebhookSpec(url="https://example.com/hook"), timeout_s=60)
    store.create(record)

    assert store.get("acme", "j1") == record
    assert store.get_by_id("j1") == record
    assert store.get("other", "j1") is None
    assert store.get("acme", "missing") is None
    assert store.get_by_id("IDEMP#acme#k") is None

    with pytest.raises(JobAlreadyExists, match=r"^job j1 already exists$"):
        store.create(job("j1", tenant="other"))
    assert store.get_by_id("j1") == record


def test_job_idempotency_key_is_claimed_with_the_job(adapters: AdapterSet) -> None:
    store = adapters.store
    first = job("j1", idempotency_key="key-1", body_hash="h1")
    store.create(first)
    assert store.find_by_idempotency_key("acme", "key-1") == first
    assert store.find_by_idempotency_key("acme", "key-2") is None
    assert store.find_by_idempotency_key("other", "key-1") is None

    with pytest.raises(IdempotencyKeyInUse) as caught:
        store.create(job("j2", idempotency_key="key-1", body_hash="h2"))
    assert caught.value.job_id == "j1"
    assert str(caught.value) == "idempotency key 'key-1' of tenant acme is held by job j1"
    assert store.get_by_id("j2") is None

    store.create(job("j3", tenant="other", idempotency_key="key-1", body_hash="h1"))
    assert store.find_by_idempotency_key("other", "key-1") == store.get_by_id("j3")


def test_job_list_pages_newest_first_with_an_opaque_cursor(adapters: AdapterSet) -> None:
    store = adapters.store
    for i in range(5):
        store.create(job(f"a{i}", created=T0 + timedelta(seconds=i)))
    store.create(job("b0", tenant="beta", created=T0 + timedelta(seconds=10)))
    for job_id in ("a1", "a3"):
        store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING)

    page1, cursor1 = store.list("acme", limit=2)
    page2, cursor2 = store.list("acme", limit=2, cursor=cursor1)
    page3, cursor3 = store.list("acme", limit=2, cursor=cursor2)
    assert [[r.job_id for r in page] for page in (page1, page2, page3)] == [["a4", "a3"], ["a2", "a1"], ["a0"]]
    assert cursor1 and cursor2 and cursor3 is None
    assert store.list("acme", limit=5) == (page1 + page2 + page3, None)

    running, cursor = store.list("acme", status=JobStatus.RUNNING, limit=1)
    assert [r.job_id for r in running] == ["a3"]
    running2, last = store.list("acme", status=JobStatus.RUNNING, limit=1, cursor=cursor)
    assert ([r.job_id for r in running2], last) == (["a1"], None)
    assert [r.job_id for r in store.list("beta")[0]] == ["b0"]

    for bad in (cursor1, "garbage!", "eyJ0IjoxfQ"):
        with pytest.raises(InvalidCursor, match=r"^invalid list cursor$"):
            store.list("beta", cursor=bad)
    with pytest.raises(InvalidCursor):
        store.list("acme", status=JobStatus.QUEUED, cursor=cursor1)  # a cursor is bound to its filter
    with pytest.raises(ValueError, match=r"^limit must be 1-1000$"):
        store.list("acme", limit=0)


def test_job_conditional_transitions(adapters: AdapterSet) -> None:
    store = adapters.store
    store.create(job("j1"))
    started = T0 + timedelta(seconds=3)
    running = store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING, started_at=started, attempts=1)
    assert (running.status, running.started_at, running.attempts) == (JobStatus.RUNNING, started, 1)
    assert running.updated_at > T0
    assert store.get_by_id("j1") == running

    with pytest.raises(TransitionConflict, match=r"^job j1 is running, not queued: cannot move to running$") as c:
        store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING)  # a second worker's claim
    assert c.value.current is JobStatus.RUNNING
    with pytest.raises(InvalidTransition, match=r"^invalid job transition running -> running$"):
        store.transition("j1", {JobStatus.RUNNING}, JobStatus.RUNNING)

    outputs = [OutputRef(node_id="9", key="jobs/j1/out/9_0.png", filename="9_0.png", content_type="image/png", size=7)]
    timings = Timings(queued_s=0.25, execution_s=1.5, per_node={"3": 1.25})
    done = store.transition(
        "j1", {JobStatus.RUNNING}, JobStatus.SUCCEEDED, outputs=outputs, timings=timings, finished_at=started
    )
    assert (done.status, done.outputs, done.timings, done.finished_at) == (
        JobStatus.SUCCEEDED,
        outputs,
        timings,
        started,
    )
    assert done.workflow_key == "jobs/j1/workflow.json" and done.metadata == job("j1").metadata

    store.create(job("j2"))
    store.transition("j2", {JobStatus.QUEUED, JobStatus.RUNNING}, JobStatus.CANCELLED)
    with pytest.raises(TransitionConflict, match=r"^job j2 is cancelled, not queued: cannot move to running$"):
        store.transition("j2", {JobStatus.QUEUED}, JobStatus.RUNNING)
    with pytest.raises(InvalidTransition, match=r"^invalid job transition cancelled -> running$"):
        store.transition("j2", {JobStatus.CANCELLED}, JobStatus.RUNNING)
    with pytest.raises(JobNotFound, match=r"^job nope not found$"):
        store.transition("nope", {JobStatus.QUEUED}, JobStatus.RUNNING)
    with pytest.raises(ValidationError):
        store.transition("j2", {JobStatus.RUNNING}, JobStatus.FAILED, status="succeeded")


def test_job_requeue_then_reclaim(adapters: AdapterSet) -> None:
    store = adapters.store
    store.create(job("j1"))
    store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING, attempts=1)
    store.transition("j1", {JobStatus.RUNNING}, JobStatus.QUEUED)
    again = store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING, attempts=2)
    assert (again.status, again.attempts) == (JobStatus.RUNNING, 2)


def test_job_progress_and_fields(adapters: AdapterSet) -> None:
    store = adapters.store
    store.create(job("j1"))
    with pytest.raises(TransitionConflict, match=r"^job j1 is queued, not running: cannot update progress$"):
        store.update_progress("j1", Progress(node="3", step=1, max=20))
    store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING)

    progress = Progress(node="3", step=5, max=20, nodes_done=2, nodes_total=7)
    updated = store.update_progress("j1", progress)
    assert (updated.progress, updated.cancel_requested) == (progress, False)

    flagged = store.set_fields("j1", when_status={JobStatus.RUNNING}, cancel_requested=True)
    assert flagged.cancel_requested is True
    assert store.update_progress("j1", progress).cancel_requested is True  # the worker learns it here

    error = JobError(type="NodeError", message="boom", node_id="3", node_type="KSampler")
    failed = store.transition("j1", {JobStatus.RUNNING}, JobStatus.FAILED, error=error)
    assert failed.error == error and failed.progress == progress
    with pytest.raises(TransitionConflict, match=r"^job j1 is failed, not running: cannot set fields$"):
        store.set_fields("j1", when_status={JobStatus.RUNNING}, cancel_requested=False)
    assert store.set_fields("j1", progress=None).progress is None
    with pytest.raises(ValidationError):
        store.set_fields("j1", tenant="other")
    with pytest.raises(JobNotFound):
        store.set_fields("nope", cancel_requested=True)
    with pytest.raises(ValueError, match=r"^when_status must not be empty$"):
        store.set_fields("j1", when_status=set(), cancel_requested=True)


def test_job_undispatched_lists_only_flagged_jobs_created_before_oldest_first(adapters: AdapterSet) -> None:
    store = adapters.store
    for index in range(6):  # enough ids to land in several of DynamoDB's index shards
        store.create(job(f"p{index}", created=T0 + timedelta(seconds=index), dispatch_pending=True))
    store.create(job("done", created=T0, dispatch_pending=False))
    store.create(job("late", created=T0 + timedelta(hours=1), dispatch_pending=True))

    pending = store.undispatched(T0 + timedelta(minutes=1))
    assert [r.job_id for r in pending] == [f"p{i}" for i in range(6)]
    assert [r.job_id for r in store.undispatched(T0 + timedelta(minutes=1), limit=2)] == ["p0", "p1"]
    assert store.undispatched(T0) == []

    cleared = store.set_fields("p2", dispatch_pending=False)
    assert cleared.dispatch_pending is False
    store.transition("p3", {JobStatus.QUEUED}, JobStatus.FAILED, dispatch_pending=False)
    remaining = [r.job_id for r in store.undispatched(T0 + timedelta(hours=2))]
    assert remaining == ["p0", "p1", "p4", "p5", "late"]
    with pytest.raises(ValueError, match=r"^limit must be 1-1000$"):
        store.undispatched(T0, limit=0)


def test_job_mark_dispatched_clears_the_flag_and_keeps_the_rest(adapters: AdapterSet) -> None:
    store = adapters.store
    created = job("d1", dispatch_pending=True)
    store.create(created)

    store.mark_dispatched("d1")

    marked = store.get("acme", "d1")
    assert marked is not None and marked.dispatch_pending is False and marked.updated_at > created.updated_at
    assert marked.model_copy(update={"dispatch_pending": True, "updated_at": created.updated_at}) == created
    assert store.undispatched(T0 + timedelta(hours=1)) == []
    with pytest.raises(JobNotFound):
        store.mark_dispatched("nope")


def test_job_count_counts_the_tenant_s_jobs_in_the_statuses_up_to_the_limit(adapters: AdapterSet) -> None:
    store = adapters.store
    for index in range(5):
        store.create(job(f"q{index}"))
    store.transition("q0", {JobStatus.QUEUED}, JobStatus.RUNNING)
    store.transition("q1", {JobStatus.QUEUED}, JobStatus.CANCELLED)
    store.create(job("other", tenant="globex"))

    assert store.count("acme", {JobStatus.QUEUED, JobStatus.RUNNING}, 1000) == 4
    assert store.count("acme", {JobStatus.QUEUED}, 1000) == 3
    assert store.count("acme", {JobStatus.QUEUED, JobStatus.RUNNING}, 2) == 2
    assert store.count("globex", {JobStatus.RUNNING}, 1000) == 0
    with pytest.raises(ValueError, match=r"^statuses must not be empty$"):
        store.count("acme", set(), 10)
    with pytest.raises(ValueError, match=r"^limit must be 1-1000$"):
        store.count("acme", {JobStatus.QUEUED}, 0)


# --- EventBus -------------------------------------------------------------------------------------------


def test_events_reach_a_subscriber(adapters: AdapterSet) -> None:
    record = job("j1", webhook=WebhookSpec(url="https://example.com/hook"))
    queued = JobEvent.from_record(JobEventType.JOB_QUEUED, record)
    done_record = record.model_copy(
        update={
            "status": JobStatus.SUCCEEDED,
            "outputs": [OutputRef(node_id="9", key="k/9.png", filename="9.png", content_type="image/png", size=3)],
            "timings": Timings(execution_s=0.5),
        }
    )
    succeeded = JobEvent.from_record(JobEventType.JOB_SUCCEEDED, done_record)
    adapters.bus.publish(queued)
    adapters.bus.publish(succeeded)

    deadline = time.monotonic() + 5
    received: list[JobEvent] = []
    while len(received) < 2 and time.monotonic() < deadline:
        received += adapters.published()
    assert sorted(received, key=lambda e: e.type) == sorted([queued, succeeded], key=lambda e: e.type)


# --- One family only ------------------------------------------------------------------------------------


def test_eventbridge_envelope(aws_adapters: AwsAdapters) -> None:
    event = JobEvent.from_record(JobEventType.JOB_FAILED, job("j1"))
    aws_adapters.bus.publish(event)
    [envelope] = aws_adapters.envelopes()
    assert (envelope["source"], envelope["detail-type"]) == ("comfyserve.job", "Job Failed")
    assert JobEvent.model_validate(envelope["detail"]) == event


def test_dynamodb_finished_records_expire_after_the_retention(aws_adapters: AwsAdapters) -> None:
    """``expires_at`` (the table's TTL attribute) is written by the terminal transition only, and only with a
    retention; the records the store returns are the same either way."""
    table = aws_adapters.store.table_name
    kept = aws_adapters.store
    expiring = DynamoJobStore(aws_adapters.dynamodb, table, retention_days=30)

    def expires_at(job_id: str) -> int | None:
        item = aws_adapters.dynamodb.get_item(TableName=table, Key={PARTITION_KEY: {"S": job_id}})["Item"]
        return int(item[TTL_ATTRIBUTE]["N"]) if TTL_ATTRIBUTE in item else None

    for store, job_id in ((expiring, "j1"), (kept, "j2")):
        store.create(job(job_id))
        store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING)
        assert expires_at(job_id) is None
    before = int(time.time())
    done = expiring.transition("j1", {JobStatus.RUNNING}, JobStatus.FAILED, error=JobError(type="x", message="y"))
    kept.transition("j2", {JobStatus.RUNNING}, JobStatus.SUCCEEDED)

    expiry = expires_at("j1")
    assert expiry is not None and before + 30 * 86400 <= expiry <= int(time.time()) + 30 * 86400
    assert expires_at("j2") is None
    assert expiring.get_by_id("j1") == done == kept.get_by_id("j1")


def test_s3_presigned_urls_work_over_http(aws_adapters: AwsAdapters) -> None:
    blobs = aws_adapters.blobs
    blobs.put("jobs/j1/out.png", b"pixels", "image/png")
    got = requests.get(blobs.presigned_get("jobs/j1/out.png", expires_s=60), timeout=10)
    assert (got.status_code, got.content) == (200, b"pixels")

    upload = blobs.presigned_put("uploads/u1.png", expires_s=60, content_type="image/png")
    put = requests.put(upload, data=b"uploaded", headers={"Content-Type": "image/png"}, timeout=10)
    assert put.status_code == 200
    assert blobs.get("uploads/u1.png") == b"uploaded"
    info = blobs.head("uploads/u1.png")
    assert info is not None and info.content_type == "image/png"


def test_local_presigned_urls_are_signed_and_expire(local_adapters: LocalAdapters) -> None:
    blobs, signer = local_adapters.blobs, local_adapters.signer
    url = blobs.presigned_get("jobs/j1/out put.png", expires_s=60)
    parts = urlsplit(url)
    assert url.startswith("http://127.0.0.1:8188/v1/blobs/jobs/j1/out%20put.png?")
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    expires, sig = query["expires"], query["sig"]
    assert abs(int(expires) - (time.time() + 60)) <= 2

    signer.verify("GET", "jobs/j1/out put.png", expires, sig)
    cases = [
        (("GET", "jobs/j1/other.png", expires, sig), {}, "bad signature"),
        (("PUT", "jobs/j1/out put.png", expires, sig), {}, "bad signature"),
        (("GET", "jobs/j1/out put.png", str(int(expires) + 600), sig), {}, "bad signature"),
        (("GET", "jobs/j1/out put.png", expires, sig), {"now": int(expires) + 1}, "expired"),
        (("GET", "jobs/j1/out put.png", None, sig), {}, "missing expires or sig"),
        (("GET", "jobs/j1/out put.png", "soon", sig), {}, "malformed expires"),
    ]
    for args, kwargs, reason in cases:
        with pytest.raises(PresignedUrlInvalid, match=f"^presigned URL rejected: {reason}$"):
            signer.verify(*args, **kwargs)  # type: ignore[arg-type]

    put_query = parse_qs(urlsplit(blobs.presigned_put("uploads/u1.png", 60, "image/png")).query)
    put_args = ("PUT", "uploads/u1.png", put_query["expires"][0], put_query["sig"][0])
    signer.verify(*put_args, content_type="image/png")
    with pytest.raises(PresignedUrlInvalid, match="bad signature"):
        signer.verify(*put_args, content_type="text/html")


def test_aws_adapters_make_one_request_per_operation(aws_adapters: AwsAdapters) -> None:
    store, queue, bus, blobs = aws_adapters.store, aws_adapters.queue(), aws_adapters.bus, aws_adapters.blobs
    calls = aws_adapters.clients.calls

    def measured(operation: Callable[[], object]) -> dict[str, int]:
        calls.clear()
        operation()
        return dict(calls)

    assert measured(lambda: store.create(job("j1"))) == {"PutItem": 1}
    assert measured(lambda: store.create(job("j2", idempotency_key="k", body_hash="h"))) == {"TransactWriteItems": 1}
    assert measured(lambda: store.get("acme", "j1")) == {"GetItem": 1}
    assert measured(lambda: store.transition("j1", {JobStatus.QUEUED}, JobStatus.RUNNING)) == {"UpdateItem": 1}
    assert measured(lambda: store.update_progress("j1", Progress(step=1, max=2))) == {"UpdateItem": 1}
    assert measured(lambda: store.list("acme", limit=10)) == {"Query": 1}
    assert measured(lambda: store.undispatched(T0)) == {"Query": DISPATCH_SHARDS}
    assert measured(lambda: store.count("acme", {JobStatus.QUEUED}, 10)) == {"Query": 1}
    assert measured(lambda: store.mark_dispatched("j1")) == {"UpdateItem": 1}
    assert measured(lambda: queue.send(message("j1"))) == {"SendMessage": 1}
    assert measured(lambda: queue.receive()) == {"ReceiveMessage": 1}
    assert measured(lambda: bus.publish(JobEvent.from_record(JobEventType.JOB_QUEUED, job("j1")))) == {"PutEvents": 1}
    assert measured(lambda: blobs.put("a/b", b"x")) == {"PutObject": 1}
    assert measured(lambda: blobs.presigned_get("a/b")) == {}
