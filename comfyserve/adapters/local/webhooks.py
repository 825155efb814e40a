"""The local stack's webhook dispatcher: the job events of ``comfyserve serve`` POSTed to their job's webhook on
background threads, signed and retried exactly as the cloud's ``webhooks`` Lambda does
(comfyserve.service.webhook_delivery: Standard Webhooks signatures). Every attempt is recorded as one JSON line.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from comfyserve.adapters.local.jsonl import JsonLinesFile
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.service.webhook_delivery import (
    DEFAULT_EVENT_TYPES,
    DeliveryAttempt,
    RetryPolicy,
    WebhookSigner,
    deliver,
    wants_delivery,
)


class WebhookDispatcher:
    """Delivers events to their job's webhook on background threads; :meth:`submit` never blocks.

    ``secret``: the Standard Webhooks key, raw bytes or ``"whsec_<base64>"``.
    """

    def __init__(
        self,
        secret: str | bytes,
        log_path: Path,
        *,
        retry: RetryPolicy | None = None,
        allow_private: bool = False,
        event_types: frozenset[JobEventType] = DEFAULT_EVENT_TYPES,
        max_workers: int = 4,
    ) -> None:
        self._signer = WebhookSigner(secret)
        self._log = JsonLinesFile(log_path)
        self._retry = retry or RetryPolicy()
        self._allow_private = allow_private
        self._event_types = event_types
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="webhook")
        self._stopping = threading.Event()
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()

    def submit(self, event: JobEvent) -> None:
        if not wants_delivery(event, self._event_types) or self._stopping.is_set():
            return
        future = self._pool.submit(self._deliver, event)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(future)

    def _deliver(self, event: JobEvent) -> None:
        deliver(
            event,
            self._signer,
            self._retry,
            allow_private=self._allow_private,
            wait=self._stopping.wait,
            record=self._record,
        )

    def _record(self, attempt: DeliveryAttempt) -> None:
        self._log.append(json.dumps(asdict(attempt), separators=(",", ":")))

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
