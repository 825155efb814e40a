"""Worker side of the websocket: ComfyUI's messages for jobs submitted with a ``client_id``, into the feed.

The executor's events go through as they are; once the job's final state is written the worker adds what
ComfyUI's main loop sends after a prompt (reference §1.10): a ``status`` and ``executing {node: null}``. A job
that failed or was cancelled before the executor reported it (an invalid workflow, an input that could not be
fetched, a cancel between nodes) gets its ``execution_error`` / ``execution_interrupted`` first, so a client
waiting for the end of its prompt always sees one.
"""

from __future__ import annotations

import logging
from typing import Any

from comfyserve.contracts.comfyui import ComfyUIMeta, prompt_id_of
from comfyserve.contracts.jobs import JobRecord, JobStatus
from comfyserve.engine import events
from comfyserve.localstack.feed import EventFeed
from comfyserve.worker.loop import MessagesFactory, PromptMessages

log = logging.getLogger(__name__)

TERMINAL_EVENTS = frozenset({events.EXECUTION_SUCCESS, events.EXECUTION_ERROR, events.EXECUTION_INTERRUPTED})
STATUS = "status"  # the server fills in the queue length when it sends it


def published_output(prompt_id: str, output: dict[str, Any]) -> dict[str, Any]:
    """An ``executed`` message's UI with its images named as ``GET /view`` serves them once published: the
    job's files live under a subfolder that starts with its prompt id; the type stays the node's (``temp`` for a
    preview, as ComfyUI says; ``/view`` serves a job's file under either type)."""
    images = output.get("images")
    if not isinstance(images, list):
        return output
    renamed = []
    for image in images:
        subfolder = str(image.get("subfolder") or "")
        folder_type = "temp" if image.get("type") == "temp" else "output"
        location = {"subfolder": f"{prompt_id}/{subfolder}" if subfolder else prompt_id, "type": folder_type}
        renamed.append({**image, **location})
    return {**output, "images": renamed}


class FeedMessages:
    def __init__(self, feed: EventFeed, record: JobRecord, client_id: str) -> None:
        self._feed = feed
        self._record = record
        self._prompt_id = prompt_id_of(record)
        self._client_id = client_id
        self._ended = False

    def _append(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            self._feed.append(self._record.tenant, self._client_id, self._prompt_id, messages)
        except Exception:  # the websocket view is best effort: it must never fail the job it reports on
            log.warning("websocket feed write failed for job %s", self._record.job_id, exc_info=True)

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self._ended = self._ended or event in TERMINAL_EVENTS
        if event == events.EXECUTED and isinstance(data.get("output"), dict):
            data = {**data, "output": published_output(self._prompt_id, data["output"])}
        if "prompt_id" in data:  # the executor knows the job id; the client knows the id it was shown
            data = {**data, "prompt_id": self._prompt_id}
        self._append([(event, data)])

    def finish(self, record: JobRecord) -> None:
        prompt_id = self._prompt_id
        closing: list[tuple[str, dict[str, Any]]] = []
        if not self._ended and record.status is JobStatus.FAILED and record.error is not None:
            error = record.error
            closing.append(
                (
                    events.EXECUTION_ERROR,
                    {
                        "prompt_id": prompt_id,
                        "node_id": error.node_id,
                        "node_type": error.node_type,
                        "executed": [],
                        "exception_message": error.message,
                        "exception_type": error.type,
                        "traceback": [],
                        "current_inputs": {},
                        "current_outputs": [],
                        "timestamp": events.timestamp(),
                    },
                )
            )
        elif not self._ended and record.status is JobStatus.CANCELLED:
            closing.append(
                (
                    events.EXECUTION_INTERRUPTED,
                    {
                        "prompt_id": prompt_id,
                        "node_id": None,
                        "node_type": None,
                        "executed": [],
                        "timestamp": events.timestamp(),
                    },
                )
            )
        closing += [(STATUS, {}), (events.EXECUTING, events.executing(prompt_id, None))]
        self._append(closing)


def feed_messages(feed: EventFeed) -> MessagesFactory:
    """The worker's factory: a feed writer for jobs that name a websocket client, nothing for the others."""

    def factory(record: JobRecord) -> PromptMessages | None:
        client_id = ComfyUIMeta.of(record.metadata).client_id
        return FeedMessages(feed, record, client_id) if client_id is not None else None

    return factory
