"""serve's console lines: the event log's new lines (a torn last line waits), one line per state change."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobError, JobStatus
from comfyserve.localstack.job_log import EventTail, describe

NOON = datetime(2026, 1, 2, 12, 0, 5, tzinfo=UTC)


def event(kind: JobEventType, status: JobStatus, error: JobError | None = None) -> JobEvent:
    return JobEvent(type=kind, job_id="job-1", tenant="alice", status=status, error=error, time=NOON)


def test_the_tail_reads_only_what_was_appended_after_it_and_waits_for_a_whole_line(tmp_path: Path) -> None:
    bus = JsonlEventBus(tmp_path / "events.jsonl")
    bus.publish(event(JobEventType.JOB_QUEUED, JobStatus.QUEUED))
    tail = EventTail(bus.path)
    assert tail.poll() == []

    started = event(JobEventType.JOB_STARTED, JobStatus.RUNNING)
    bus.publish(started)
    with bus.path.open("a") as handle:
        handle.write('{"type": "JobSucc')  # a writer caught mid-line
    assert tail.poll() == [started]
    with bus.path.open("a") as handle:
        handle.write('eeded"}\n')  # completed, but not an event: skipped
    assert tail.poll() == []


def test_each_state_change_is_one_line_and_progress_none() -> None:
    assert describe(event(JobEventType.JOB_QUEUED, JobStatus.QUEUED)) == "12:00:05 job job-1 (tenant alice) queued"
    assert describe(event(JobEventType.JOB_PROGRESS, JobStatus.RUNNING)) is None
    failed = event(JobEventType.JOB_FAILED, JobStatus.FAILED, JobError(type="execution_error", message="a\nb " * 200))
    line = describe(failed)
    assert line is not None and "\n" not in line and len(line) < 300
    assert line.startswith("12:00:05 job job-1 (tenant alice) failed: execution_error: a b a b") and line.endswith("…")
