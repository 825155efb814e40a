"""What every use case of the job service works with: the four ports, the catalog and the settings."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from comfyserve.contracts.jobs import utc_now
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.ports import BlobStore, EventBus, JobQueue, JobStore
from comfyserve.service.settings import ServiceSettings


def new_job_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ServiceDeps:
    """``inventory``: check model file names at submit (None accepts any name; the worker checks again)."""

    blobs: BlobStore
    queue: JobQueue
    jobs: JobStore
    events: EventBus
    catalog: Catalog
    settings: ServiceSettings = field(default_factory=ServiceSettings)
    inventory: ModelInventory | None = None
    # The workers' figures for one tenant's jobs (local stack; CloudWatch in the cloud).
    metrics: Callable[[str], dict[str, Any]] | None = None
    clock: Callable[[], datetime] = utc_now
    new_id: Callable[[], str] = new_job_id
