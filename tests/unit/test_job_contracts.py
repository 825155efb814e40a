"""Job contracts: the state machine, JSON round trips, and the invariants the models enforce."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import (
    ALLOWED_TRANSITIONS,
    InputRef,
    InvalidTransition,
    JobError,
    JobRecord,
    JobStatus,
    JobUpdate,
    OutputRef,
    Progress,
    QueueMessage,
    Timings,
    WebhookSpec,
    check_transition,
)

S = JobStatus
HEAVY = ("torch", "numpy", "diffusers", "transformers")


def full_record() -> JobRecord:
    return JobRecord(
        job_id="job_01",
        tenant="acme",
        status=S.RUNNING,
        created_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        workflow={"3": {"class_type": "KSampler", "inputs": {"seed": 5, "cfg": 7.5, "model": ["4", 0]}}},
        inputs={"photo.png": InputRef(key="uploads/u1.png", content_type="image/png")},
        webhook=WebhookSpec(url="https://example.com/h"),
        timeout_s=120,
        metadata={"user": "u1", "n": [1, 2.5, None]},
        idempotency_key="idem-1",
        body_hash="abc",
        progress=Progress(node="3", step=4, max=20, nodes_done=1, nodes_total=5),
        timings=Timings(queued_s=0.1, cold_start_s=2.0, execution_s=3.5, per_node={"3": 3.4}),
        outputs=[
            OutputRef(node_id="9", key="jobs/job_01/9_0.png", filename="9_0.png", content_type="image/png", size=9)
        ],
        error=JobError(type="X", message="m", node_id="3", node_type="KSampler"),
        attempts=2,
        cancel_requested=True,
    )


def test_state_machine_edges() -> None:
    allowed = {(a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets}
    assert allowed == {
        (S.QUEUED, S.RUNNING),
        (S.QUEUED, S.CANCELLED),
        (S.QUEUED, S.FAILED),
        (S.RUNNING, S.SUCCEEDED),
        (S.RUNNING, S.FAILED),
        (S.RUNNING, S.CANCELLED),
        (S.RUNNING, S.QUEUED),
    }
    for status in S:
        assert status.is_terminal == (not ALLOWED_TRANSITIONS[status])
    with pytest.raises(InvalidTransition, match=r"^invalid job transition succeeded -> running$"):
        check_transition(S.SUCCEEDED, S.RUNNING)
    with pytest.raises(InvalidTransition, match=r"^invalid job transition queued -> succeeded$"):
        check_transition(S.QUEUED, S.SUCCEEDED)


def test_record_and_event_round_trip_through_json() -> None:
    record = full_record()
    assert JobRecord.model_validate_json(record.model_dump_json()) == record
    assert record.created_at.utcoffset() == timedelta(0) and record.created_at.hour == 10
    event = JobEvent.from_record(JobEventType.JOB_PROGRESS, record)
    assert (event.status, event.progress, event.outputs) == (S.RUNNING, record.progress, record.outputs)
    assert JobEvent.model_validate_json(event.model_dump_json()) == event
    assert JobEvent.from_record(JobEventType.JOB_SUCCEEDED, record).progress is None
    assert b"webhook" not in event.webhook_body()


def test_list_order_key_sorts_by_time_then_id() -> None:
    base = full_record()
    whole = base.model_copy(update={"created_at": datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)})
    later = base.model_copy(update={"created_at": datetime(2026, 1, 1, 10, 0, 0, 500, tzinfo=UTC)})
    assert whole.list_order_key() == "2026-01-01T10:00:00.000000Z#job_01"
    assert whole.list_order_key() < later.list_order_key()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "a job needs exactly one of workflow_key or workflow"),
        ({"workflow_key": "w", "workflow": {}}, "a job needs exactly one of workflow_key or workflow"),
        ({"workflow_key": "w", "idempotency_key": "k"}, "idempotency_key and body_hash go together"),
        ({"workflow_key": "w", "job_id": "a#b"}, "String should match pattern"),
        ({"workflow_key": "w", "tenant": "t/x"}, "String should match pattern"),
        ({"workflow_key": "w", "created_at": "2026-01-01T00:00:00"}, "Input should have timezone info"),
    ],
)
def test_record_invariants(fields: dict[str, object], message: str) -> None:
    data: dict[str, object] = {"job_id": "j1", "tenant": "acme"} | fields
    with pytest.raises(ValidationError, match=message):
        JobRecord.model_validate(data)


def test_input_ref_is_a_blob_key_only() -> None:
    """URL inputs are fetched at submit time: a record never sends a worker to a URL."""
    with pytest.raises(ValidationError, match="key\n  Field required"):
        InputRef.model_validate({"url": "https://x"})


def test_update_allows_only_mutable_fields_and_keeps_explicit_nones() -> None:
    assert JobUpdate(progress=None, attempts=3).changes() == {"progress": None, "attempts": 3}
    for forbidden in ("status", "tenant", "job_id", "created_at"):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            JobUpdate.model_validate({forbidden: "x"})


def test_queue_message_is_a_small_claim_check() -> None:
    message = QueueMessage(job_id="j" * 64, tenant="t" * 128, workflow_key="jobs/" + "j" * 64 + "/workflow.json")
    assert len(message.model_dump_json()) < 512
    assert QueueMessage.model_validate_json(message.model_dump_json()) == message


def test_ports_and_adapters_import_nothing_heavy() -> None:
    modules = [
        "comfyserve.ports",
        "comfyserve.netguard",
        "comfyserve.adapters.local.blobs",
        "comfyserve.adapters.local.sqlite_queue",
        "comfyserve.adapters.local.sqlite_jobs",
        "comfyserve.adapters.local.events",
        "comfyserve.adapters.aws.s3",
        "comfyserve.adapters.aws.sqs",
        "comfyserve.adapters.aws.dynamodb",
        "comfyserve.adapters.aws.eventbridge",
        "comfyserve.adapters.aws.provision",
    ]
    code = f"import sys; import {', '.join(modules)}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
