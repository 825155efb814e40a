"""How many GPU worker tasks the service should run: a pure decision over the queue, used by the ``scaler``
Lambda every minute and on every enqueue, and replayed by the scaling simulator (bench/bench_scaling_sim.py).

Backlog per task is AWS's rule for queue workers: a task should hold no more jobs (the one in hand plus those
waiting behind it) than it can finish within the acceptable wait, ``1 + target_wait_s // seconds_per_job``.
Scale-out is immediate and starts from zero on one message (target tracking cannot: reference §1.1).
Scale-in waits: a surplus of tasks is held for ``scale_in_delay_s`` (a GPU instance restarted minutes later
costs more than one kept idle that long), then the idle tasks go, never one with a job in flight (those also
hold ECS task scale-in protection); an empty queue keeps one warm task until ``scale_in_cooldown_s`` and only
then goes to zero.

A ComfyUI fleet also keeps one task until its catalog is published: the API validates against the published
catalog, and until a worker has published one it refuses ComfyUI-only workflows, so no job would start the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from comfyserve.ports import QueueDepth
from comfyserve.settings import EnvSettings

# An empty queue keeps every task this long (one scaler period): steady traffic is rarely empty for longer.
EMPTY_GRACE_S = 60.0


class ScalingPolicy(EnvSettings):
    """The scaler's knobs (defaults fit ~15 s SDXL-class jobs on one L4/A10G; see docs/SCALING.md)."""

    doc_title = "Scaler (the `scaler` Lambda and the scaling simulator)"

    seconds_per_job: float = Field(default=15.0, gt=0, description="mean run time of one job on one task")
    target_wait_s: float = Field(default=45.0, ge=0, description="acceptable time a job waits in the queue")
    max_workers: int = Field(default=10, ge=1, description="most tasks the service may run (GPU quota)")
    scale_in_delay_s: float = Field(
        default=600.0, ge=0, description="how long more tasks than the backlog needs are kept before stopping some"
    )
    scale_in_cooldown_s: float = Field(
        default=300.0, ge=0, description="how long the queue stays empty before the last task stops"
    )

    @property
    def jobs_per_task(self) -> int:
        """Jobs one task may hold (in hand + waiting) and still start the last within ``target_wait_s``."""
        return 1 + int(self.target_wait_s // self.seconds_per_job)


@dataclass(frozen=True)
class Decision:
    """``surplus_since``: since when the service has run more tasks than the backlog needs (``None``: it has
    not); the caller keeps it for the next decision."""

    desired: int
    reason: str
    surplus_since: datetime | None

    def changes(self, current: int) -> bool:
        return self.desired != current


def desired_count(
    depth: QueueDepth,
    tasks: int,
    now: datetime,
    surplus_since: datetime | None,
    policy: ScalingPolicy,
    *,
    catalog_published: bool = True,
) -> Decision:
    """The task count for ``depth`` (visible + in-flight messages) given ``tasks`` (the service's current
    desired count) and ``surplus_since`` from the previous decision. ``catalog_published`` false (a ComfyUI
    fleet whose catalog no worker has published yet) keeps at least one task."""
    decision = _for_backlog(depth, tasks, now, surplus_since, policy)
    if catalog_published or decision.desired >= 1:
        return decision
    return Decision(
        1, f"no catalog published yet, keeping 1 task to publish it ({decision.reason})", decision.surplus_since
    )


def _for_backlog(
    depth: QueueDepth, tasks: int, now: datetime, surplus_since: datetime | None, policy: ScalingPolicy
) -> Decision:
    needed = math.ceil(depth.total / policy.jobs_per_task)
    if needed >= tasks:
        desired = min(policy.max_workers, needed)
        if needed > desired:
            reason = f"backlog {depth.total} needs {needed} tasks, capped at max_workers {policy.max_workers}"
        else:
            reason = f"backlog {depth.total} at {policy.jobs_per_task} jobs per task needs {needed} tasks"
        return Decision(desired, reason, None)
    since = surplus_since or now
    held_s = (now - since).total_seconds()
    if depth.total == 0:
        if held_s >= policy.scale_in_cooldown_s:
            return Decision(0, f"queue empty for {held_s:.0f} s (cool-down {policy.scale_in_cooldown_s:.0f} s)", since)
        desired = tasks if held_s < EMPTY_GRACE_S else min(tasks, 1)
        return Decision(desired, f"queue empty for {held_s:.0f} s, keeping {desired} warm through the cool-down", since)
    if held_s < policy.scale_in_delay_s:
        reason = f"backlog {depth.total} needs {needed} of {tasks} tasks; holding them for {held_s:.0f} s"
        return Decision(tasks, reason, since)
    desired = max(needed, depth.in_flight)
    if desired == tasks:
        return Decision(tasks, f"{depth.in_flight} jobs in flight keep {tasks} tasks", since)
    reason = f"backlog {depth.total} needs {needed} tasks after {held_s:.0f} s of surplus; keeping {desired}"
    return Decision(desired, reason, since if desired > needed else None)
