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
        description="GPU Auto Scaling group the scaler sizes too, one instance per task (unset: ECS managed "
        "scaling alone, a minute slower from zero and 15 minutes slower to release an empty instance)",
    )
    backend: BackendName = Field(
        default=CloudWorkerSettings.model_fields["backend"].default,
        description="the workers' execution backend (comfyui: one worker runs until a catalog is published under "
        "COMFYSERVE_CATALOG_KEY)",
    )


class WorkerService(Protocol):
    def desired_count(self) -> int: ...

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
    instances: int | None = None  # the instance count set, when the scaler sizes the capacity too


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
    current = service.desired_count()
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
        have, most = capacity.desired_instances()
        instances = min(decision.desired, most)
        if instances != have:
            capacity.set_instances(instances)
    log.info(
        "scaler: %d -> %d (%s); visible %d, in flight %d",
        current,
        decision.desired,
        decision.reason,
        depth.visible,
        depth.in_flight,
    )
    return ScaleResult(current, decision, updated, instances)


def _load_surplus_since(state: BlobStore) -> datetime | None:
    try:
        raw = json.loads(state.get(STATE_KEY))["surplus_since"]
        return datetime.fromisoformat(raw) if raw is not None else None
    except BlobNotFound:
        return None
    except (ValueError, TypeError, KeyError):
        log.warning("unreadable %s; the surplus clock starts afresh", STATE_KEY)
        return None
