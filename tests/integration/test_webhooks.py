"""Webhook delivery against a real local HTTP server: signatures, replays, retries, the SSRF guard."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.webhooks import (
    SIGNATURE_HEADER,
    RetryPolicy,
    WebhookDispatcher,
    WebhookSignatureInvalid,
    sign,
    verify_signature,
)
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, WebhookSpec

SECRET = b"whsec-test"
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.05, max_delay_s=0.2, timeout_s=2)


@dataclass
class Receiver:
    """A webhook endpoint that answers with the next scripted status (200 once the script runs out)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append((dict(self.headers.items()), body))
            time.sleep(state.delay_s)
            self.send_response(state.script.pop(0) if state.script else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    thread.join()


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
        verify_signature(SECRET, headers[SIGNATURE_HEADER], body)
        assert JobEvent.model_validate_json(body) == event.model_copy(update={"webhook": None})
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Comfyserve-Event-Type"] == "JobSucceeded"
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


def test_verify_rejects_replays_and_forgeries() -> None:
    body = b'{"job_id":"j1"}'
    now = 1_800_000_000
    header = sign(SECRET, body, now)
    verify_signature(SECRET, header, body, now=now + 299)
    cases = [
        (SECRET, header, body, now + 301, "timestamp outside tolerance (replay?)"),
        (SECRET, header, body, now - 301, "timestamp outside tolerance (replay?)"),
        (SECRET, header, body + b" ", now, "bad signature"),
        (b"other-secret", header, body, now, "bad signature"),
        (SECRET, header.replace(f"t={now}", f"t={now + 1}"), body, now, "bad signature"),
        (SECRET, "v1=abc", body, now, "malformed signature header"),
        (SECRET, None, body, now, "malformed signature header"),
    ]
    for secret, candidate, payload, at, reason in cases:
        with pytest.raises(WebhookSignatureInvalid) as caught:
            verify_signature(secret, candidate, payload, now=at)
        assert str(caught.value) == f"webhook signature rejected: {reason}"
