"""Static proof that every adapter implements its port: mypy fails on this module if a signature drifts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfyserve.adapters.aws.dynamodb import DynamoJobStore
    from comfyserve.adapters.aws.eventbridge import EventBridgeBus
    from comfyserve.adapters.aws.s3 import S3BlobStore
    from comfyserve.adapters.aws.sqs import SqsJobQueue
    from comfyserve.adapters.local.blobs import LocalBlobStore
    from comfyserve.adapters.local.events import JsonlEventBus
    from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
    from comfyserve.adapters.local.sqlite_queue import SqliteJobQueue
    from comfyserve.ports import BlobStore, EventBus, JobQueue, JobStore

    _blob_stores: tuple[type[BlobStore], ...] = (LocalBlobStore, S3BlobStore)
    _job_queues: tuple[type[JobQueue], ...] = (SqliteJobQueue, SqsJobQueue)
    _job_stores: tuple[type[JobStore], ...] = (SqliteJobStore, DynamoJobStore)
    _event_buses: tuple[type[EventBus], ...] = (JsonlEventBus, EventBridgeBus)
