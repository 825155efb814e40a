"""The ``reconciler`` Lambda on moto: a scheduled run sends the message and the ``Job Queued`` event of a job
whose submit died after writing its record, found through the table's dispatch index."""

from __future__ import annotations

from datetime import timedelta

import pytest

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, utc_now
from tests.integration.conftest import AwsAdapters
from tests.integration.lambda_events import context, fresh_import, scheduled_event


def test_a_scheduled_run_dispatches_a_job_left_without_its_message(
    aws_adapters: AwsAdapters, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = aws_adapters
    queue = a.queue()
    env = {
        "AWS_ENDPOINT_URL": a.clients.endpoint,
        "COMFYSERVE_BUCKET": a.blobs.bucket,
        "COMFYSERVE_TABLE": a.store.table_name,
        "COMFYSERVE_QUEUE_URL": queue.queue_url,
        "COMFYSERVE_EVENT_BUS": a.bus.bus_name,
        "COMFYSERVE_DISPATCH_GRACE_S": "60",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    old = utc_now() - timedelta(minutes=5)
    stranded = JobRecord(job_id="stranded", tenant="acme", workflow={}, created_at=old, dispatch_pending=True)
    fresh = JobRecord(job_id="fresh", tenant="acme", workflow={}, dispatch_pending=True)  # its submit is at work
    a.store.create(stranded)
    a.store.create(fresh)
    module = fresh_import("lambdas.reconciler")

    result = module.handler(scheduled_event("comfyserve-reconciler"), context("reconciler"))
    again = module.handler(scheduled_event("comfyserve-reconciler"), context("reconciler"))

    assert result == {"resent": ["stranded"], "announced": ["stranded"], "failed": []}
    assert again == {"resent": [], "announced": [], "failed": []}
    assert [m.message().job_id for m in queue.receive(max_messages=10)] == ["stranded"]
    assert [(e.type, e.job_id) for e in a.published()] == [(JobEventType.JOB_QUEUED, "stranded")]
