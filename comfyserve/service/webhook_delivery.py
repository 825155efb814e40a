"""Signed webhook delivery, one scheme for the cloud (``webhooks`` Lambda) and the local stack: Standard Webhooks.

Every POST carries ``webhook-id`` (the event id, the same on every retry, so receivers drop duplicates),
``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256(secret, f"{id}.{timestamp}.{body}")>``); receivers verify them with any Standard
Webhooks library, e.g. ``standardwebhooks.Webhook("whsec_…").verify(body, headers)``. The body is the job
event's JSON without its ``webhook`` field.

The URL passes the SSRF guard (comfyserve.netguard) right before each connection, redirects are reported
instead of followed (a redirect could lead past the guard), and a failed delivery never touches the job.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, model_validator
from standardwebhooks import Webhook

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.netguard import UnsafeURL, open_public
from comfyserve.settings import EnvSettings

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_EVENT_TYPES = frozenset(set(JobEventType) - {JobEventType.JOB_PROGRESS})
USER_AGENT = "comfyserve-webhooks/1"

Outcome = Literal["delivered", "retrying", "failed"]


class WebhookSigner:
    """Standard Webhooks signing with one secret: ``"whsec_<base64>"`` text or the raw key bytes."""

    def __init__(self, secret: str | bytes) -> None:
        if not secret:
            raise ValueError("a webhook signing secret is required")
        self._webhook = Webhook(secret)

    def headers(self, event_id: str, body: bytes, timestamp: int) -> dict[str, str]:
        signature = self._webhook.sign(event_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
        return {"webhook-id": event_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) waits ``min(base_delay_s * 2 ** (n - 1), max_delay_s)`` before attempt n + 1."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    timeout_s: float = 5.0

    def delay_after(self, attempt: int) -> float:
        return float(min(self.base_delay_s * 2 ** (attempt - 1), self.max_delay_s))


@dataclass(frozen=True)
class DeliveryAttempt:
    event_id: str
    job_id: str
    url: str
    attempt: int
    time: float
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0
    retriable: bool = False  # a later attempt might succeed (a 5xx, 429, timeout or connection error)


def wants_delivery(event: JobEvent, event_types: frozenset[JobEventType] = DEFAULT_EVENT_TYPES) -> bool:
    """Whether ``event`` goes to a webhook: its job has one and the type is delivered (progress is not)."""
    return event.webhook is not None and event.type in event_types


def post_once(
    url: str, body: bytes, headers: dict[str, str], *, timeout_s: float, allow_private: bool
) -> tuple[int | None, str | None, bool]:
    """One POST: ``(status code, error, retriable)``. A refused URL is never connected to, nor retried."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        with open_public(url, data=body, headers=headers, timeout=timeout_s, allow_private=allow_private) as response:
            return int(response.status), None, False
    except UnsafeURL as exc:
        return None, str(exc), False
    except urllib.error.HTTPError as exc:
        return exc.code, None, exc.code in RETRIABLE_STATUS
    except (OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}", True


def deliver(
    event: JobEvent,
    signer: WebhookSigner,
    retry: RetryPolicy,
    *,
    allow_private: bool = False,
    wait: Callable[[float], bool],
    record: Callable[[DeliveryAttempt], None] = lambda attempt: None,
) -> DeliveryAttempt:
    """POST ``event`` to its job's webhook, signed afresh each attempt, retrying with back-off until delivered,
    refused (a non-retriable answer) or out of attempts; returns the last attempt (``outcome`` ``"retrying"``
    when ``wait`` asked to stop early). ``wait(seconds)`` sleeps and returns True to stop."""
    if event.webhook is None:
        raise ValueError(f"event {event.event_id} has no webhook")
    url = event.webhook.url
    body = event.webhook_body()
    extra = {"X-Comfyserve-Event-Type": event.type.value}
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        headers = {**extra, **signer.headers(event.event_id, body, int(time.time()))}
        status, error, retriable = post_once(url, body, headers, timeout_s=retry.timeout_s, allow_private=allow_private)
        duration_ms = (time.perf_counter() - started) * 1000
        delivered = status is not None and 200 <= status < 300
        last = attempt >= retry.max_attempts
        outcome: Outcome = "delivered" if delivered else ("retrying" if retriable and not last else "failed")
        result = DeliveryAttempt(
            event.event_id, event.job_id, url, attempt, time.time(), outcome, status, error, duration_ms, retriable
        )
        record(result)
        if outcome != "retrying" or wait(retry.delay_after(attempt)):
            return result


class WebhookSettings(EnvSettings):
    """The ``webhooks`` Lambda: its signing secret (inline or a Secrets Manager secret) and its retries."""

    doc_title = "Webhooks (the `webhooks` Lambda)"

    webhook_secret: str | None = Field(
        default=None, repr=False, description='Standard Webhooks signing secret "whsec_<base64>"'
    )
    webhook_secret_arn: str | None = Field(
        default=None, description="instead of WEBHOOK_SECRET: a Secrets Manager secret holding it"
    )
    webhook_attempts: int = Field(
        default=3, ge=1, description="POSTs per invocation (1 s, 2 s … apart) before Lambda's own retries"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="timeout of one POST")
    allow_private_urls: bool = Field(default=False, description="deliver to private addresses (tests only)")

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSettings:
        if (self.webhook_secret is None) == (self.webhook_secret_arn is None):
            raise ValueError("set exactly one of COMFYSERVE_WEBHOOK_SECRET and COMFYSERVE_WEBHOOK_SECRET_ARN")
        return self

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.webhook_attempts, base_delay_s=1.0, max_delay_s=4.0, timeout_s=self.webhook_timeout_s
        )


class WebhookDeliveryFailed(Exception):
    """The receiver could not be reached or answered a retriable error: raised so that Lambda retries the
    invocation later (its asynchronous retries, then the on-failure destination)."""

    def __init__(self, attempt: DeliveryAttempt) -> None:
        reason = attempt.error or f"HTTP {attempt.status_code}"
        super().__init__(f"webhook for job {attempt.job_id} (event {attempt.event_id}) not delivered: {reason}")
        self.attempt = attempt


def deliver_bus_event(
    detail: dict[str, object], signer: WebhookSigner, settings: WebhookSettings, sleep: Callable[[float], None]
) -> DeliveryAttempt | None:
    """Deliver one job event from the bus (an EventBridge ``detail``); ``None`` when it goes to no webhook.
    A refused URL or a client error ends the delivery; a retriable failure raises :class:`WebhookDeliveryFailed`.
    """
    event = JobEvent.model_validate(detail)
    if not wants_delivery(event):
        return None

    def wait(seconds: float) -> bool:
        sleep(seconds)
        return False

    last = deliver(event, signer, settings.retry, allow_private=settings.allow_private_urls, wait=wait)
    if last.outcome != "delivered" and last.retriable:
        raise WebhookDeliveryFailed(last)
    return last
