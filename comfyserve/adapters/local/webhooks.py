"""Signed webhook delivery: signing and verification, and a dispatcher that retries in the background.

Signature header (receivers verify it with :func:`verify_signature`)::

    X-Comfyserve-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>

Each attempt is signed afresh, so a retry hours later still verifies; receivers reject timestamps outside a
tolerance (300 s by default), which stops replays. Every attempt is recorded as one JSON line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from comfyserve.adapters.local.jsonl import JsonLinesFile
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.netguard import UnsafeURL, check_public_url

SIGNATURE_HEADER = "X-Comfyserve-Signature"
DEFAULT_TOLERANCE_S = 300
RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
DEFAULT_EVENT_TYPES = frozenset(set(JobEventType) - {JobEventType.JOB_PROGRESS})

Outcome = Literal["delivered", "retrying", "failed"]


class WebhookSignatureInvalid(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook signature rejected: {reason}")
        self.reason = reason


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str | None, body: bytes, *, tolerance_s: int = DEFAULT_TOLERANCE_S, now: float | None = None
) -> None:
    """Raise :class:`WebhookSignatureInvalid` unless ``header`` signs ``body`` with ``secret`` recently enough."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise WebhookSignatureInvalid("malformed signature header")
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise WebhookSignatureInvalid("bad signature")
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise WebhookSignatureInvalid("timestamp outside tolerance (replay?)")


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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could point anywhere, past the address check: report the 3xx instead of following it.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebhookDispatcher:
    """Delivers events to their job's webhook on background threads; :meth:`submit` never blocks."""

    def __init__(
        self,
        secret: bytes,
        log_path: Path,
        *,
        retry: RetryPolicy | None = None,
        allow_private: bool = False,
        event_types: frozenset[JobEventType] = DEFAULT_EVENT_TYPES,
        max_workers: int = 4,
    ) -> None:
        if not secret:
            raise ValueError("a signing secret is required")
        self._secret = secret
        self._log = JsonLinesFile(log_path)
        self._retry = retry or RetryPolicy()
        self._allow_private = allow_private
        self._event_types = event_types
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="webhook")
        self._stopping = threading.Event()
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()

    def submit(self, event: JobEvent) -> None:
        if event.webhook is None or event.type not in self._event_types or self._stopping.is_set():
            return
        future = self._pool.submit(self._deliver, event, event.webhook.url)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def _deliver(self, event: JobEvent, url: str) -> None:
        body = event.webhook_body()
        for attempt in range(1, self._retry.max_attempts + 1):
            last = attempt == self._retry.max_attempts
            started = time.perf_counter()
            status, error, retriable = self._attempt(event, url, body)
            duration_ms = (time.perf_counter() - started) * 1000
            delivered = status is not None and 200 <= status < 300
            outcome: Outcome = "delivered" if delivered else ("retrying" if retriable and not last else "failed")
            row = DeliveryAttempt(
                event.event_id, event.job_id, url, attempt, time.time(), outcome, status, error, duration_ms
            )
            self._log.append(json.dumps(asdict(row), separators=(",", ":")))
            if outcome != "retrying" or self._stopping.wait(self._retry.delay_after(attempt)):
                return

    def _attempt(self, event: JobEvent, url: str, body: bytes) -> tuple[int | None, str | None, bool]:
        """(status code, error, retriable) of one POST."""
        try:
            check_public_url(url, allow_private=self._allow_private)
        except UnsafeURL as exc:
            return None, str(exc), False
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "comfyserve-webhooks/1")
        request.add_header("X-Comfyserve-Event-Id", event.event_id)
        request.add_header("X-Comfyserve-Event-Type", event.type.value)
        request.add_header(SIGNATURE_HEADER, sign(self._secret, body, int(time.time())))
        try:
            with self._opener.open(request, timeout=self._retry.timeout_s) as response:
                return int(response.status), None, False
        except urllib.error.HTTPError as exc:
            return exc.code, None, exc.code in RETRIABLE_STATUS
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}", True

    def deliveries(self, job_id: str | None = None) -> list[DeliveryAttempt]:
        """Recorded attempts, oldest first, optionally for one job."""
        rows = [DeliveryAttempt(**row) for row in self._log.read()]
        return [row for row in rows if job_id is None or row.job_id == job_id]

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every submitted delivery has finished; False if some are still running at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._pending_lock:
                if not self._pending:
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        """Stop retrying (deliveries waiting for a retry end as recorded so far) and join the threads."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
