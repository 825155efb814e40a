"""The completion use case on both adapter sets: the single writer of a job's terminal state, whose event is
published once whatever the signal's duplicates, order or a crash between the terminal write and the publish."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus, OutputRef, Timings
from comfyserve.contracts.manifest import JobManifest, ManifestStatus, manifest_key
from comfyserve.ports import EventBus, EventPublishError
from comfyserve.service.completion import Completed, Completion, final_event_id
from tests.integration.conftest import AdapterSet

TENANT = "acme"


def running_job(adapters: AdapterSet) -> JobRecord:
    record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow={"1": {"class_type": "X", "inputs": {}}})
    adapters.store.create(record)
    return adapters.store.transition(record.job_id, {JobStatus.QUEUED}, JobStatus.RUNNING, attempts=1)


def write_manifest(adapters: AdapterSet, record: JobRecord, status: ManifestStatus = "succeeded", **fields: Any) -> str:
    outputs = (
        [
            OutputRef(
                node_id="9",
                key=f"outputs/{TENANT}/{record.job_id}/a.png",
                filename="a.png",
                content_type="image/png",
                size=3,
            )
        ]
        if status == "succeeded"
        else []
    )
    error = JobError(type="ValueError", message="broke", node_id="2") if status == "failed" else None
    manifest = JobManifest(
        job_id=record.job_id,
        tenant=record.tenant,
        status=status,
        outputs=outputs,
        error=error,
        timings=Timings(queued_s=0.1, execution_s=0.5, per_node={"9": 0.5}),
        nodes_total=1,
        attempt=record.attempts,
        **fields,
    )
    adapters.blobs.put(manifest.key, manifest.to_bytes(), "application/json")
    return manifest.key


def terminal_events(adapters: AdapterSet, job_id: str | None = None) -> list[JobEvent]:
    """The events published since the last call (of one job, if given), progress left out."""
    return [e for e in adapters.published() if job_id in (None, e.job_id) and e.type is not JobEventType.JOB_PROGRESS]


class FailingOnceBus:
    """A bus that refuses its first publish (the completion 'crashes' between its write and its publish)."""

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner
        self.failed = False

    def publish(self, event: JobEvent) -> None:
        if not self.failed:
            self.failed = True
            raise EventPublishError("bus down")
        self.inner.publish(event)


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
def test_a_manifest_completes_its_running_job_once(adapters: AdapterSet, status: ManifestStatus) -> None:
    record = running_job(adapters)
    key = write_manifest(adapters, record, status)
    completion = Completion(adapters.store, adapters.bus, adapters.blobs)

    assert completion.on_object_created(key) is Completed.COMPLETED

    final = adapters.store.get_by_id(record.job_id)
    manifest = JobManifest.model_validate_json(adapters.blobs.get(key))
    assert final is not None and final.status.value == status and final.final_event == "published"
    assert (final.outputs, final.error, final.timings) == (manifest.outputs, manifest.error, manifest.timings)
    assert final.finished_at == manifest.written_at
    (event,) = terminal_events(adapters, record.job_id)
    expected = {"succeeded": JobEventType.JOB_SUCCEEDED, "failed": JobEventType.JOB_FAILED}
    assert event.type is expected.get(status, JobEventType.JOB_CANCELLED)
    assert event.event_id == final_event_id(record.job_id) and event.outputs == manifest.outputs


def test_duplicate_and_reordered_signals_change_nothing(adapters: AdapterSet) -> None:
    first, second = running_job(adapters), running_job(adapters)
    first_key, second_key = write_manifest(adapters, first), write_manifest(adapters, second, "failed")
    completion = Completion(adapters.store, adapters.bus, adapters.blobs)

    outcomes = [completion.on_object_created(k) for k in (second_key, first_key, first_key, second_key, first_key)]

    assert outcomes == [Completed.COMPLETED, Completed.COMPLETED] + [Completed.DUPLICATE] * 3
    events = terminal_events(adapters)  # read once: the AWS subscriber queue hands each event out once
    assert [(e.job_id, e.type) for e in events if e.job_id == first.job_id] == [
        (first.job_id, JobEventType.JOB_SUCCEEDED)
    ]
    assert [(e.job_id, e.type) for e in events if e.job_id == second.job_id] == [
        (second.job_id, JobEventType.JOB_FAILED)
    ]


def test_a_crash_between_the_terminal_write_and_the_publish_is_recovered_by_the_next_signal(
    adapters: AdapterSet,
) -> None:
    record = running_job(adapters)
    key = write_manifest(adapters, record)
    crashing = Completion(adapters.store, FailingOnceBus(adapters.bus), adapters.blobs)

    with pytest.raises(EventPublishError, match="bus down"):
        crashing.on_object_created(key)
    written = adapters.store.get_by_id(record.job_id)
    assert written is not None and written.status is JobStatus.SUCCEEDED and written.final_event == "pending"
    assert terminal_events(adapters, record.job_id) == []

    assert crashing.on_object_created(key) is Completed.RECOVERED  # the signal delivered again
    assert crashing.on_object_created(key) is Completed.DUPLICATE
    (event,) = terminal_events(adapters, record.job_id)
    assert event.type is JobEventType.JOB_SUCCEEDED and event.event_id == final_event_id(record.job_id)
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.final_event == "published" and final.updated_at >= written.updated_at


def test_a_manifest_for_a_job_ended_by_another_writer_publishes_nothing(adapters: AdapterSet) -> None:
    """A job cancelled while queued (by the API, which publishes its own event) never gets a second event."""
    record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow={"1": {"class_type": "X", "inputs": {}}})
    adapters.store.create(record)
    adapters.store.transition(record.job_id, {JobStatus.QUEUED}, JobStatus.CANCELLED)
    key = write_manifest(adapters, record.model_copy(update={"attempts": 1}))

    assert Completion(adapters.store, adapters.bus, adapters.blobs).on_object_created(key) is Completed.IGNORED

    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.CANCELLED and final.outputs == []
    assert final.final_event is None and terminal_events(adapters, record.job_id) == []


def test_a_manifest_for_a_released_job_is_ignored(adapters: AdapterSet) -> None:
    """A drained worker put the job back to queued: a late manifest from its attempt does not end it."""
    record = running_job(adapters)
    adapters.store.transition(record.job_id, {JobStatus.RUNNING}, JobStatus.QUEUED)
    key = write_manifest(adapters, record)

    assert Completion(adapters.store, adapters.bus, adapters.blobs).on_object_created(key) is Completed.IGNORED
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.QUEUED and terminal_events(adapters, record.job_id) == []


def _bad_objects(job_id: str) -> dict[str, tuple[str, bytes]]:
    good = JobManifest(job_id=job_id, tenant=TENANT, status="succeeded").to_bytes()
    unknown = JobManifest(job_id="unknown", tenant=TENANT, status="succeeded").to_bytes()
    return {
        "not a manifest": (f"outputs/{TENANT}/{job_id}/a.png", b"png"),
        "not a job manifest": (manifest_key(TENANT, job_id), b"{not json"),
        "another tenant's key": (manifest_key("other", job_id), good),
        "no such job": (manifest_key(TENANT, "unknown"), unknown),
    }


@pytest.mark.parametrize("case", list(_bad_objects("x")))
def test_other_objects_and_bad_manifests_write_nothing(adapters: AdapterSet, case: str) -> None:
    record = running_job(adapters)
    key, body = _bad_objects(record.job_id)[case]
    adapters.blobs.put(key, body, "application/json")

    assert Completion(adapters.store, adapters.bus, adapters.blobs).on_object_created(key) is Completed.IGNORED
    assert adapters.store.get_by_id(record.job_id) == record
    assert terminal_events(adapters, record.job_id) == []
