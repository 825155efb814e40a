"""Webhook delivery against a real local HTTP server: Standard Webhooks signatures checked with the
``standardwebhooks`` library, replays, retries, the SSRF guard."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.webhooks import WebhookDispatcher
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, WebhookSpec
from comfyserve.service.webhook_delivery import RetryPolicy, WebhookSigner
from tests.integration.webhook_receiver import Receiver, receiver_fixture  # noqa: F401  (the fixture)

SECRET = bytes(range(32))  # the local stack's key is 32 random bytes
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=0.2, timeout_s=2)


def event_for(url: str, event_type: JobEventType = JobEventType.JOB_SUCCEEDED) -> JobEvent:
    record = JobRecord(job_id="j1", tenant="acme", workflow_key="w", webhook=WebhookSpec(url=url))
    return JobEvent.from_record(event_type, record)


def dispatcher(tmp_path: Path, **kwargs: object) -> WebhookDispatcher:
    options: dict[str, object] = {"retry": FAST, "allow_private": True} | kwargs
    return WebhookDispatcher(SECRET, tmp_path / "deliveries.jsonl", **options)  # type: ignore[arg-type]


def test_signed_post_retried_after_500_and_every_attempt_recorded(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script = [500]
    hooks = dispatcher(tmp_path)
    bus = JsonlEventBus(tmp_path / "events.jsonl", hooks)
    event = event_for(receiver.url)
    bus.publish(event)
    assert hooks.flush(10)
    hooks.close()

    assert len(receiver.requests) == 2
    for headers, body in receiver.requests:
        assert Webhook(SECRET).verify(body, headers) == json.loads(body)
        assert headers["webhook-id"] == event.event_id  # the same on the retry: receivers drop duplicates
        assert JobEvent.model_validate_json(body) == event.model_copy(update={"webhook": None})
        assert headers["content-type"] == "application/json"
        assert headers["x-comfyserve-event-type"] == "JobSucceeded"
    assert b"webhook" not in receiver.requests[0][1]
    attempts = [(a.attempt, a.status_code, a.outcome) for a in hooks.deliveries("j1")]
    assert attempts == [(1, 500, "retrying"), (2, 200, "delivered")]
    assert bus.events() == [event]


def test_client_errors_are_not_retried_and_retries_stop(tmp_path: Path, receiver: Receiver) -> None:
    receiver.script = [400, 503, 503, 503]
    hooks = dispatcher(tmp_path)
    hooks.submit(event_for(receiver.url))
    hooks.submit(event_for(receiver.url.replace("/hook", "/other")))
    assert hooks.flush(10)
    outcomes = sorted((a.url.rsplit("/", 1)[1], a.attempt, a.status_code, a.outcome) for a in hooks.deliveries())
    hooks.close()
    # Deliveries run concurrently: whichever POST came first got the 400, the other the 503s until it gave up.
    assert len(outcomes) == 4
    assert sorted(o[3] for o in outcomes) == ["failed", "failed", "retrying", "retrying"]
    assert [o[2] for o in outcomes if o[2] == 400] == [400]


def test_publish_does_not_wait_for_delivery(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay_s = 1.0
    hooks = dispatcher(tmp_path)
    bus = JsonlEventBus(tmp_path / "events.jsonl", hooks)
    started = time.perf_counter()
    bus.publish(event_for(receiver.url))
    assert time.perf_counter() - started < 0.5
    assert hooks.flush(10)
    hooks.close()
    assert [a.outcome for a in hooks.deliveries()] == ["delivered"]


def test_private_addresses_are_refused_by_default(tmp_path: Path, receiver: Receiver) -> None:
    hooks = dispatcher(tmp_path, allow_private=False)
    hooks.submit(event_for(receiver.url))
    assert hooks.flush(10)
    hooks.close()
    assert receiver.requests == []
    [attempt] = hooks.deliveries()
    assert attempt.outcome == "failed"
    assert attempt.error == f"refused URL {receiver.url!r}: 127.0.0.1 resolves to non-public address 127.0.0.1"


def test_progress_events_and_jobs_without_webhook_are_not_delivered(tmp_path: Path, receiver: Receiver) -> None:
    hooks = dispatcher(tmp_path)
    hooks.submit(event_for(receiver.url, JobEventType.JOB_PROGRESS))
    hooks.submit(JobEvent.from_record(JobEventType.JOB_FAILED, JobRecord(job_id="j2", tenant="a", workflow_key="w")))
    assert hooks.flush(10)
    hooks.close()
    assert receiver.requests == [] and hooks.deliveries() == []


def test_standard_webhooks_receivers_reject_replays_and_forgeries() -> None:
    body = b'{"job_id":"j1"}'
    signer = WebhookSigner(SECRET)
    now = int(time.time())
    verifier = Webhook(SECRET)
    assert verifier.verify(body, signer.headers("evt_1", body, now - 250)) == {"job_id": "j1"}
    # The same key written as a "whsec_" secret, as the cloud stack stores it, signs the same.
    assert WebhookSigner("whsec_" + base64.b64encode(SECRET).decode()).headers("evt_1", body, now) == signer.headers(
        "evt_1", body, now
    )
    good = signer.headers("evt_1", body, now)
    cases = [
        (verifier, signer.headers("evt_1", body, now - 301), body, "Message timestamp too old"),
        (verifier, signer.headers("evt_1", body, now + 301), body, "Message timestamp too new"),
        (verifier, good, body + b" ", "No matching signature found"),
        (verifier, {**good, "webhook-id": "evt_2"}, body, "No matching signature found"),
        (Webhook(b"other-secret"), good, body, "No matching signature found"),
        (verifier, {k: v for k, v in good.items() if k != "webhook-signature"}, body, "Missing required headers"),
    ]
    for verifier, headers, payload, reason in cases:
        with pytest.raises(WebhookVerificationError) as caught:
            verifier.verify(payload, headers)
        assert str(caught.value) == reason
