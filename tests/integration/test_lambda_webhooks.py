"""The ``webhooks`` Lambda on moto: real EventBridge envelopes from the bus, a real receiver on 127.0.0.1 that
verifies the Standard Webhooks signature with the ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any

import pytest
from standardwebhooks import Webhook

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord, WebhookSpec
from comfyserve.service.webhook_delivery import WebhookDeliveryFailed
from tests.integration.conftest import AwsAdapters, AwsClients
from tests.integration.lambda_events import context, fresh_import
from tests.integration.webhook_receiver import Receiver, receiver_fixture  # noqa: F401  (the fixture)

KEY = bytes(range(32, 64))
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def bus_envelope(adapters: AwsAdapters, event: JobEvent) -> dict[str, Any]:
    """``event`` published on a moto bus and read back from a subscriber rule: the envelope a target gets."""
    adapters.bus.publish(event)
    [envelope] = adapters.envelopes()
    return envelope


def job_event(url: str | None, event_type: JobEventType = JobEventType.JOB_SUCCEEDED) -> JobEvent:
    record = JobRecord(job_id="job1", tenant="acme", workflow_key="w", webhook=WebhookSpec(url=url) if url else None)
    return JobEvent.from_record(event_type, record)


def load_handler(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, **env: str) -> ModuleType:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("COMFYSERVE_WEBHOOK_ATTEMPTS", "2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return fresh_import("lambdas.webhooks")


@pytest.fixture
def webhooks(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> ModuleType:
    return load_handler(
        monkeypatch, moto_endpoint, COMFYSERVE_WEBHOOK_SECRET=SECRET, COMFYSERVE_ALLOW_PRIVATE_URLS="true"
    )


def test_a_job_event_from_the_bus_is_delivered_signed(
    webhooks: ModuleType, aws_adapters: AwsAdapters, receiver: Receiver
) -> None:
    event = job_event(receiver.url)
    envelope = bus_envelope(aws_adapters, event)
    receiver.script = [503]

    result = webhooks.handler(envelope, context("webhooks"))

    assert result == {"delivered": True, "status_code": 200, "error": None}
    assert len(receiver.requests) == 2  # the 503 was retried
    for headers, body in receiver.requests:
        assert Webhook(SECRET).verify(body, headers) == json.loads(event.webhook_body())
        assert headers["webhook-id"] == event.event_id
    assert b"webhook" not in receiver.requests[0][1]


def test_a_receiver_that_stays_down_fails_the_invocation_for_lambda_to_retry(
    webhooks: ModuleType, aws_adapters: AwsAdapters, receiver: Receiver
) -> None:
    receiver.script = [500, 502]
    envelope = bus_envelope(aws_adapters, job_event(receiver.url, JobEventType.JOB_FAILED))

    with pytest.raises(WebhookDeliveryFailed) as caught:
        webhooks.handler(envelope, context("webhooks"))

    event_id = envelope["detail"]["event_id"]
    assert str(caught.value) == f"webhook for job job1 (event {event_id}) not delivered: HTTP 502"
    assert len(receiver.requests) == 2


def test_client_errors_end_the_delivery_without_a_retry(
    webhooks: ModuleType, aws_adapters: AwsAdapters, receiver: Receiver
) -> None:
    receiver.script = [410]
    result = webhooks.handler(bus_envelope(aws_adapters, job_event(receiver.url)), context("webhooks"))
    assert result == {"delivered": False, "status_code": 410, "error": None}
    assert len(receiver.requests) == 1


def test_progress_and_jobs_without_webhooks_are_skipped(
    webhooks: ModuleType, aws_adapters: AwsAdapters, receiver: Receiver
) -> None:
    for event in (job_event(receiver.url, JobEventType.JOB_PROGRESS), job_event(None)):
        result = webhooks.handler(bus_envelope(aws_adapters, event), context("webhooks"))
        assert result == {"delivered": False, "reason": "no webhook for this event"}
    assert receiver.requests == []


def test_private_addresses_are_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch,
    moto_endpoint: str,
    aws_clients: AwsClients,
    aws_adapters: AwsAdapters,
    receiver: Receiver,
) -> None:
    secrets = aws_clients.client("secretsmanager")
    arn = secrets.create_secret(Name=f"{aws_adapters.prefix}-webhooks", SecretString=SECRET)["ARN"]
    handler = load_handler(monkeypatch, moto_endpoint, COMFYSERVE_WEBHOOK_SECRET_ARN=arn).handler

    result = handler(bus_envelope(aws_adapters, job_event(receiver.url)), context("webhooks"))

    assert result == {
        "delivered": False,
        "status_code": None,
        "error": f"refused URL {receiver.url!r}: 127.0.0.1 resolves to non-public address 127.0.0.1",
    }
    assert receiver.requests == []


def test_settings_need_exactly_one_secret() -> None:
    from comfyserve.service.webhook_delivery import WebhookSettings

    with pytest.raises(ValueError) as caught:
        WebhookSettings.from_env({})
    assert "set exactly one of COMFYSERVE_WEBHOOK_SECRET and COMFYSERVE_WEBHOOK_SECRET_ARN" in str(caught.value)
