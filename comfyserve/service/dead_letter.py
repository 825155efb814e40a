"""Dead letters: a job whose message the queue gave up on (received ``maxReceiveCount`` times without being
deleted: its worker died each time, or kept releasing it) is failed, once, through the completion path.

The completion use case stays the single writer of terminal states and the only publisher of terminal events:
this handler writes what a worker would have written last — a ``failed`` manifest naming the reason — and hands
it to :class:`~comfyserve.service.completion.Completion`. A job still ``queued`` (released by a draining worker
before its last delivery) is first claimed (``queued → running``), as a worker would. A job that already has a
manifest (its worker finished after all, and only the completion signal is pending) completes from that
manifest instead, and a finished job is left as it is, so a redelivered dead letter changes nothing.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError

from comfyserve.contracts.jobs import JobError, JobRecord, JobStatus, QueueMessage, utc_now
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.ports import BlobStore, JobStore, TransitionConflict
from comfyserve.service.completion import Completed, Completion

log = logging.getLogger(__name__)

DEAD_LETTER_ERROR = "dead_lettered"
WORKER_ID = "dead-letter"
CLAIM_ATTEMPTS = 4


class DeadLetterOutcome(enum.StrEnum):
    FAILED = "failed"  # failed now, with the reason
    FROM_MANIFEST = "from_manifest"  # the job had a manifest after all: completed from it
    ALREADY_FINISHED = "already_finished"  # terminal before (a redelivered dead letter)
    IGNORED = "ignored"  # not a job message, or no such job


def dead_letter_error(receive_count: int) -> JobError:
    return JobError(
        type=DEAD_LETTER_ERROR,
        message=f"the job's message was received {receive_count} times without the job finishing "
        "(the queue's maximum receive count); it was moved to the dead-letter queue",
    )


class DeadLetters:
    def __init__(
        self, store: JobStore, blobs: BlobStore, completion: Completion, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._completion = completion
        self._clock = clock

    def on_dead_letter(self, body: str, receive_count: int) -> DeadLetterOutcome:
        """Handle one dead-lettered message body. Raises only on a failure worth retrying (a store or bus error)."""
        try:
            message = QueueMessage.model_validate_json(body)
        except ValidationError:
            log.error("dead letter is not a job message: %.200s", body)
            return DeadLetterOutcome.IGNORED
        record = self._store.get_by_id(message.job_id)
        for _ in range(CLAIM_ATTEMPTS):
            if record is None or record.tenant != message.tenant:
                log.warning("dead letter for unknown job %s of %s", message.job_id, message.tenant)
                return DeadLetterOutcome.IGNORED
            key = manifest_key(record.tenant, record.job_id)
            if record.status.is_terminal:
                if self._blobs.head(key) is not None:
                    self._completion.on_object_created(key)  # publishes a terminal event still owed, if any
                return DeadLetterOutcome.ALREADY_FINISHED
            if record.status is JobStatus.RUNNING:
                return self._fail_running(record, key, receive_count)
            try:
                record = self._store.transition(
                    record.job_id,
                    {JobStatus.QUEUED},
                    JobStatus.RUNNING,
                    attempts=record.attempts + 1,
                    started_at=self._clock(),
                )
            except TransitionConflict:
                record = self._store.get_by_id(message.job_id)
        raise RuntimeError(f"job {message.job_id} kept changing state; the dead letter is retried")

    def _fail_running(self, record: JobRecord, key: str, receive_count: int) -> DeadLetterOutcome:
        if self._blobs.head(key) is not None:
            self._completion.on_object_created(key)
            return DeadLetterOutcome.FROM_MANIFEST
        manifest = JobManifest(
            job_id=record.job_id,
            tenant=record.tenant,
            status="failed",
            error=dead_letter_error(receive_count),
            worker_id=WORKER_ID,
            attempt=max(record.attempts, 1),
            written_at=self._clock(),
        )
        self._blobs.put(key, manifest.to_bytes(), "application/json")
        if self._completion.complete(manifest) is Completed.IGNORED:
            # Released to the queue meanwhile: the retry claims it and completes it from this manifest.
            raise RuntimeError(f"job {record.job_id} changed state while it was failed; the dead letter is retried")
        return DeadLetterOutcome.FAILED
