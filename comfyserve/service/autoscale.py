"""One scaler run: read the queue and the worker service, decide (:func:`scaling.desired_count`), and change the
service only when the count differs. The surplus clock survives between runs in a small state object. A ComfyUI
fleet keeps one worker until its catalog is published (one HEAD of the catalog key per run)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import Field

from comfyserve.contracts.jobs import utc_now
from comfyserve.ports import BlobNotFound, BlobStore, JobQueue
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY
from comfyserve.service.scaling import Decision, ScalingPolicy, desired_count
from comfyserve.settings import BackendName, CloudWorkerSettings, EnvSettings

log = logging.getLogger(__name__)

STATE_KEY = "scaler/state.json"


class ScalerTarget(EnvSettings):
    """The ECS service the ``scaler`` Lambda sizes."""

    doc_title = "Scaler target (the `scaler` Lambda)"

    ecs_cluster: str = Field(min_length=1, description="cluster of the worker service")
    ecs_service: str = Field(min_length=1, description="the worker service")
    asg_name: str | None = Field(
        default=None,
        description="GPU Auto Scaling group the scaler sizes too, one instance per task wanted or still running "
        "(unset: ECS managed scaling alone, whose CapacityProviderReservation alarm adds a minute or more from zero)",
    )
    backend: BackendName = Field(
        default=CloudWorkerSettings.model_fields["backend"].default,
        description="the workers' execution backend (comfyui: one worker runs until a catalog is published under "
        "COMFYSERVE_CATALOG_KEY)",
    )


@dataclass(frozen=True)
class ServiceCounts:
    """The service's desired count, and its tasks running or starting (a task with a job in hand keeps running
    under scale-in protection after the desired count drops below it)."""

    desired: int
    running: int


class WorkerService(Protocol):
    def counts(self) -> ServiceCounts: ...

    def set_desired_count(self, count: int) -> None: ...


class WorkerCapacity(Protocol):
    def desired_instances(self) -> tuple[int, int]:
        """(desired instances, the most there may be)."""
        ...

    def set_instances(self, count: int) -> None: ...


@dataclass(frozen=True)
class ScaleResult:
    previous: int
    decision: Decision
    updated: bool
    instances: int | None = None  # the group's desired capacity, when the scaler sizes the capacity too


def run_scaler(
    queue: JobQueue,
    service: WorkerService,
    state: BlobStore,
    policy: ScalingPolicy,
    clock: Callable[[], datetime] = utc_now,
    capacity: WorkerCapacity | None = None,
    backend: BackendName = "builtin",
    catalog_key: str = DEFAULT_CATALOG_KEY,
) -> ScaleResult:
    """``state`` is the jobs bucket's blob store: the scaler's state object and the published catalog."""
    depth = queue.approximate_depth()
    counts = service.counts()
    current = counts.desired
    surplus_since = _load_surplus_since(state)
    published = backend != "comfyui" or state.head(catalog_key) is not None
    decision = desired_count(depth, current, clock(), surplus_since, policy, catalog_published=published)
    if decision.surplus_since != surplus_since:
        body = {"surplus_since": decision.surplus_since.isoformat() if decision.surplus_since else None}
        state.put(STATE_KEY, json.dumps(body).encode(), "application/json")
    updated = decision.changes(current)
    if updated:
        service.set_desired_count(decision.desired)
    instances = None
    if capacity is not None:
        instances = _size_capacity(capacity, max(decision.desired, counts.running))
    log.info(
        "scaler: %d -> %d (%s); visible %d, in flight %d",
        current,
        decision.desired,
        decision.reason,
        depth.visible,
        depth.in_flight,
    )
    return ScaleResult(current, decision, updated, instances)


def _size_capacity(capacity: WorkerCapacity, needed: int) -> int:
    """One instance per task the service wants or still runs, within the group's maximum: queued work raises the
    group at once (no wait for managed scaling's CapacityProviderReservation alarm), and a lower count never
    goes below the instances whose tasks still run. Which empty instance goes, and when, stays with ECS: managed
    termination protection keeps every instance with a task protected and lifts it from empty ones."""
    have, most = capacity.desired_instances()
    instances = min(needed, most)
    if instances != have:
        capacity.set_instances(instances)
    return instances


def _load_surplus_since(state: BlobStore) -> datetime | None:
    try:
        raw = json.loads(state.get(STATE_KEY))["surplus_since"]
        return datetime.fromisoformat(raw) if raw is not None else None
    except BlobNotFound:
        return None
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable %s; the surplus clock starts afresh", STATE_KEY)
        return None
