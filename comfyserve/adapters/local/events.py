"""EventBus on a JSON-lines log: one event per line, appended under a lock, webhooks handed to a dispatcher."""

from __future__ import annotations

from pathlib import Path

from comfyserve.adapters.local.jsonl import JsonLinesFile
from comfyserve.adapters.local.webhooks import WebhookDispatcher
from comfyserve.contracts.events import JobEvent


class JsonlEventBus:
    def __init__(self, log_path: Path, webhooks: WebhookDispatcher | None = None) -> None:
        self._log = JsonLinesFile(log_path)
        self._webhooks = webhooks

    @property
    def path(self) -> Path:
        return self._log.path

    def publish(self, event: JobEvent) -> None:
        """Append the event (durable on return), then queue its webhook delivery without waiting for it."""
        self._log.append(event.model_dump_json())
        if self._webhooks is not None:
            self._webhooks.submit(event)

    def events(self, job_id: str | None = None) -> list[JobEvent]:
        """The logged events, oldest first, optionally for one job."""
        events = [JobEvent.model_validate(row) for row in self._log.read()]
        return [event for event in events if job_id is None or event.job_id == job_id]
