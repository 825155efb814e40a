"""What only the local adapters must show: durability across restarts, safety across processes, the blob root."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from pathlib import Path

import pytest

from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
from comfyserve.adapters.local.sqlite_queue import RECEIVE_SQL, SqliteJobQueue
from comfyserve.contracts.jobs import JobRecord, JobStatus, QueueMessage
from comfyserve.ports import InvalidKey, TransitionConflict


def test_queue_and_jobs_survive_a_restart(tmp_path: Path) -> None:
    queue = SqliteJobQueue(tmp_path / "q.sqlite")
    queue.send(QueueMessage(job_id="j1", tenant="acme"))
    queue.send(QueueMessage(job_id="j2", tenant="acme"))
    [in_flight] = queue.receive(visibility_timeout_s=60)
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    record = JobRecord(job_id="j1", tenant="acme", workflow={"1": {"class_type": "X", "inputs": {}}})
    store.create(record)
    queue.close()
    store.close()

    reopened = SqliteJobQueue(tmp_path / "q.sqlite")
    depth = reopened.approximate_depth()
    assert (depth.visible, depth.in_flight) == (1, 1)
    reopened.delete(in_flight.receipt)  # receipts stay valid across a restart
    [rest] = reopened.receive()
    assert rest.message().job_id != in_flight.message().job_id
    assert SqliteJobStore(tmp_path / "jobs.sqlite").get("acme", "j1") == record


def test_receive_walks_an_index_instead_of_sorting_the_backlog(tmp_path: Path) -> None:
    SqliteJobQueue(tmp_path / "q.sqlite").close()
    with sqlite3.connect(tmp_path / "q.sqlite") as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + RECEIVE_SQL, ("jobs", 0.0, 0, 1))]
    assert plan == ["SEARCH queue_messages USING INDEX queue_messages_order (queue=? AND seq>?)"]


def _consume(db: str, claims: multiprocessing.Queue[tuple[str, str]], worker: str) -> None:
    queue = SqliteJobQueue(Path(db))
    store = SqliteJobStore(Path(db))
    while True:
        received = queue.receive(max_messages=3, visibility_timeout_s=60)
        if not received:
            return
        for message in received:
            job_id = message.message().job_id
            try:
                store.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING)
                claims.put((job_id, worker))
            except TransitionConflict:
                claims.put((job_id, "conflict"))
            queue.delete(message.receipt)


def test_queue_and_claims_are_safe_across_processes(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    queue, store = SqliteJobQueue(db), SqliteJobStore(db)
    job_ids = [f"j{i:02d}" for i in range(30)]
    for job_id in job_ids:
        store.create(JobRecord(job_id=job_id, tenant="acme", workflow_key="w"))
        queue.send(QueueMessage(job_id=job_id, tenant="acme"))

    context = multiprocessing.get_context("spawn")
    claims: multiprocessing.Queue[tuple[str, str]] = context.Queue()
    workers = [context.Process(target=_consume, args=(str(db), claims, f"w{n}")) for n in range(2)]
    for process in workers:
        process.start()
    results = [claims.get(timeout=60) for _ in job_ids]
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert sorted(job_id for job_id, _ in results) == job_ids  # each message delivered exactly once
    assert all(worker != "conflict" for _, worker in results)
    assert queue.approximate_depth().total == 0
    assert {r.status for r in store.list("acme", limit=100)[0]} == {JobStatus.RUNNING}


def test_blob_store_stays_inside_its_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    blobs = LocalBlobStore(tmp_path / "root", BlobUrlSigner("http://h", b"s"))
    os.symlink(outside, tmp_path / "root" / "objects" / "link")

    with pytest.raises(InvalidKey, match=r"^invalid blob key 'link/secret.txt': escapes the blob root$"):
        blobs.get("link/secret.txt")
    with pytest.raises(InvalidKey, match="escapes the blob root"):
        blobs.put("link/new.txt", b"x")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_blob_writes_leave_no_partial_files(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path, BlobUrlSigner("http://h", b"s"))
    blobs.put("a/b.bin", b"x" * 10_000)
    with pytest.raises(InvalidKey, match=r"^invalid blob key 'a/b.bin/c': collides with another key's path$"):
        blobs.put("a/b.bin/c", b"y")
    with pytest.raises(InvalidKey, match="collides with another key's path"):
        blobs.put("a", b"y")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert blobs.list("") == ["a/b.bin"]


def test_blob_puts_fsync_only_when_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    signer = BlobUrlSigner("http://h", b"s")
    LocalBlobStore(tmp_path / "fast", signer).put("k", b"x")
    assert synced == []
    durable = LocalBlobStore(tmp_path / "safe", signer, durable=True)
    durable.put("k", b"x")
    assert len(synced) == 2  # the metadata and the object
    assert durable.get("k") == b"x"
