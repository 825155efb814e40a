"""The ports the job service and the worker speak to, their value types and their errors.

Two adapter sets implement them (``adapters/local``: a directory and SQLite; ``adapters/aws``: S3, SQS,
DynamoDB, EventBridge) and one contract suite (``tests/integration/test_ports_contract.py``) holds both to the
same behaviour. Errors raised by adapters are the ones below, never a boto3 or sqlite3 exception for an
expected case (missing object, conflict, stale receipt).
"""

from __future__ import annotations

import builtins
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from comfyserve.contracts.events import JobEvent
from comfyserve.contracts.jobs import JobRecord, JobStatus, Progress, QueueMessage

MAX_KEY_BYTES = 1024


class PortError(Exception):
    """Base class for the expected failures of a port."""


class InvalidKey(PortError, ValueError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid blob key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class BlobNotFound(PortError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no blob at key {key!r}")
        self.key = key


class ReceiptInvalid(PortError):
    """The receipt no longer names an in-flight message (deleted, or received again by someone else)."""

    def __init__(self, receipt: str) -> None:
        super().__init__(f"receipt no longer valid: {receipt[:24]}…")
        self.receipt = receipt


class JobAlreadyExists(PortError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} already exists")
        self.job_id = job_id


class IdempotencyKeyInUse(PortError):
    """``create`` found the tenant's idempotency key already taken; ``job_id`` is the job that holds it."""

    def __init__(self, tenant: str, key: str, job_id: str) -> None:
        super().__init__(f"idempotency key {key!r} of tenant {tenant} is held by job {job_id}")
        self.tenant = tenant
        self.key = key
        self.job_id = job_id


class JobNotFound(PortError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class TransitionConflict(PortError):
    """The job is not in one of the expected statuses; ``current`` is the status it has."""

    def __init__(self, job_id: str, current: JobStatus, expected: Collection[JobStatus], wanted: str) -> None:
        expected_text = "|".join(sorted(s.value for s in expected))
        super().__init__(f"job {job_id} is {current.value}, not {expected_text}: cannot {wanted}")
        self.job_id = job_id
        self.current = current
        self.expected = frozenset(expected)


class InvalidCursor(PortError, ValueError):
    def __init__(self) -> None:
        super().__init__("invalid list cursor")


class EventPublishError(PortError):
    pass


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`InvalidKey`.

    The one place that decides what a key may be, so that no key can escape a blob root on disk and S3 keys
    stay portable: relative, '/'-separated, no empty, '.' or '..' segments, no backslashes or control chars.
    """
    if not key:
        raise InvalidKey(key, "empty key")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(key, f"longer than {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey(key, "absolute path")
    if "\\" in key:
        raise InvalidKey(key, "backslash")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise InvalidKey(key, "control character")
    for segment in key.split("/"):
        if segment == "":
            raise InvalidKey(key, "empty segment")
        if segment in (".", ".."):
            raise InvalidKey(key, f"{segment!r} segment")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key (a trailing '/' allowed)."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    content_type: str
    etag: str  # hex MD5 of the content (S3's single-part ETag, without quotes)


@dataclass(frozen=True)
class ReceivedMessage:
    body: str
    receipt: str
    receive_count: int  # 1 on first delivery
    message_id: str

    def message(self) -> QueueMessage:
        """The body parsed as a :class:`QueueMessage` (raises pydantic's ValidationError on a foreign body)."""
        return QueueMessage.model_validate_json(self.body)


@dataclass(frozen=True)
class QueueDepth:
    visible: int  # waiting to be received
    in_flight: int  # received, neither deleted nor back to visible yet

    @property
    def total(self) -> int:
        return self.visible + self.in_flight


class BlobStore(Protocol):
    """Objects by key (see :func:`validate_key`); every method validates its key first."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> BlobInfo:
        """Store ``data`` atomically (readers see the old or the new object, never a part)."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`BlobNotFound` if absent."""
        ...

    def head(self, key: str) -> BlobInfo | None: ...

    def list(self, prefix: str = "") -> builtins.list[str]:
        """All keys that start with ``prefix`` (a plain string prefix, as S3's), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting an absent key is not an error."""
        ...

    def presigned_get(self, key: str, expires_s: int = 3600) -> str:
        """A URL anyone may GET for ``expires_s`` seconds. No round trip."""
        ...

    def presigned_put(self, key: str, expires_s: int = 3600, content_type: str = "application/octet-stream") -> str:
        """A URL to PUT the object to; the uploader must send ``Content-Type: content_type``."""
        ...


class JobQueue(Protocol):
    """At-least-once job queue with SQS semantics.

    A received message is invisible for ``visibility_timeout_s`` and then delivered again with a higher
    ``receive_count`` unless deleted. A message received ``max_receives`` times (configured on the queue) and
    not deleted moves to the dead-letter queue at its next receive attempt.
    """

    def send(self, message: QueueMessage) -> str:
        """Enqueue ``message``; returns the message id."""
        ...

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        """Up to ``max_messages`` (1-10) visible messages, waiting up to ``wait_s`` (0-20) for the first."""
        ...

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        """Make the message invisible for ``seconds`` from now (the heartbeat); :class:`ReceiptInvalid` if gone."""
        ...

    def delete(self, receipt: str) -> None:
        """Acknowledge: the message is done. Deleting twice is not an error."""
        ...

    def release(self, receipt: str) -> None:
        """Make the message visible again now (visibility 0), e.g. when a worker drains."""
        ...

    def approximate_depth(self) -> QueueDepth: ...

    @property
    def dead_letters(self) -> JobQueue | None:
        """The dead-letter queue (itself a JobQueue to receive and delete from), if this queue has one."""
        ...


class JobStore(Protocol):
    """Job records. Every write is conditional; ``updated_at`` is set by the store on every change.

    ``fields`` below are :class:`~comfyserve.contracts.jobs.JobUpdate`'s (started_at, finished_at, progress,
    timings, outputs, error, attempts, cancel_requested); an unknown name raises pydantic's ValidationError.
    """

    def create(self, record: JobRecord) -> None:
        """Insert a new record. :class:`JobAlreadyExists` if the id exists; if the record carries an
        idempotency key that the tenant already used, :class:`IdempotencyKeyInUse` naming the holder.
        Nothing is written in either case."""
        ...

    def get(self, tenant: str, job_id: str) -> JobRecord | None:
        """The tenant's job; ``None`` if absent or owned by another tenant."""
        ...

    def get_by_id(self, job_id: str) -> JobRecord | None:
        """Any tenant's job (for workers and event handlers, never for request paths)."""
        ...

    def list(
        self, tenant: str, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[JobRecord], str | None]:
        """A page of the tenant's jobs, newest first; the cursor (opaque) is ``None`` on the last page.
        :class:`InvalidCursor` for a cursor this store did not issue for this tenant and filter."""
        ...

    def count(self, tenant: str, statuses: Collection[JobStatus], limit: int) -> int:
        """How many of the tenant's jobs have one of ``statuses``, counted up to ``limit`` (no record is read
        into memory: a figure for displays such as ComfyUI's ``queue_remaining``)."""
        ...

    def transition(
        self, job_id: str, from_statuses: Collection[JobStatus], to_status: JobStatus, **fields: Any
    ) -> JobRecord:
        """Move the job to ``to_status`` if its status is one of ``from_statuses``, setting ``fields`` in the
        same write; returns the new record. Raises ``InvalidTransition`` (a ValueError) if an edge is not in the
        state machine, :class:`TransitionConflict` (with the current status) if the job is elsewhere,
        :class:`JobNotFound`. A store may expire a record some time after it reaches a terminal state (the
        DynamoDB store's retention); the record it returns is the same either way."""
        ...

    def update_progress(self, job_id: str, progress: Progress) -> JobRecord:
        """Record progress of a running job; returns the record, so the worker sees ``cancel_requested`` in the
        same round trip. :class:`TransitionConflict` if the job is not running."""
        ...

    def set_fields(self, job_id: str, *, when_status: Collection[JobStatus] | None = None, **fields: Any) -> JobRecord:
        """Set ``fields`` without moving the status (only while the status is in ``when_status``, if given)."""
        ...

    def mark_dispatched(self, job_id: str) -> None:
        """Clear the job's ``dispatch_pending`` (its message is queued, its ``Job Queued`` published) in one
        write that returns nothing: the submit path's last step. :class:`JobNotFound` if absent."""
        ...

    def find_by_idempotency_key(self, tenant: str, key: str) -> JobRecord | None:
        """The job created with this tenant's idempotency key (compare its ``body_hash`` to detect a reuse)."""
        ...

    def undispatched(self, created_before: datetime, limit: int = 100) -> builtins.list[JobRecord]:
        """Up to ``limit`` jobs of any tenant created before ``created_before`` whose ``dispatch_pending`` is
        still set, oldest first: read from an index of those jobs alone, never a scan of the table."""
        ...


class EventBus(Protocol):
    def publish(self, event: JobEvent) -> None:
        """Publish one event; returns once it is durably accepted (webhooks are delivered asynchronously).
        :class:`EventPublishError` if the bus refused it."""
        ...
