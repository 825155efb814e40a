"""How many GPU worker tasks the service should run: a pure decision over the queue, used by the ``scaler``
Lambda every minute and on every enqueue, and replayed by the scaling simulator (bench/bench_scaling_sim.py).

Backlog per task is AWS's rule for queue workers: a task should hold no more jobs (the one in hand plus those
waiting behind it) than it can finish within the acceptable wait, ``1 + target_wait_s // seconds_per_job``.
Scale-out is immediate and starts from zero on one message (target tracking cannot: reference §1.1); tasks
with a job in flight are never scaled away (they also hold ECS task scale-in protection); an empty queue
keeps one warm task through the cool-down and only then goes to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from comfyserve.ports import QueueDepth
from comfyserve.settings import EnvSettings


class ScalingPolicy(EnvSettings):
    """The scaler's knobs (defaults fit ~20 s SDXL-class jobs)."""

    doc_title = "Scaler (the `scaler` Lambda and the scaling simulator)"

    seconds_per_job: float = Field(default=20.0, gt=0, description="Mean run time of one job on one task.")
    target_wait_s: float = Field(default=60.0, ge=0, description="Acceptable time a job waits in the queue.")
    max_workers: int = Field(default=10, ge=1, description="Most tasks the service may run (GPU quota).")
    scale_in_cooldown_s: float = Field(default=600.0, ge=0, description="Empty-queue time before zero tasks.")

    @property
    def jobs_per_task(self) -> int:
        """Jobs one task may hold (in hand + waiting) and still start the last within ``target_wait_s``."""
        return 1 + int(self.target_wait_s // self.seconds_per_job)


@dataclass(frozen=True)
class Decision:
    """``idle_since``: when the queue was first seen empty (``None`` while it has work); the caller keeps it
    for the next decision."""

    desired: int
    reason: str
    idle_since: datetime | None

    def changes(self, current: int) -> bool:
        return self.desired != current


def desired_count(
    depth: QueueDepth, tasks: int, now: datetime, idle_since: datetime | None, policy: ScalingPolicy
) -> Decision:
    """The task count for ``depth`` (visible + in-flight messages) given ``tasks`` (the service's current
    desired count) and ``idle_since`` from the previous decision."""
    if depth.total > 0:
        needed = math.ceil(depth.total / policy.jobs_per_task)
        desired = min(policy.max_workers, max(needed, depth.in_flight))
        if desired == policy.max_workers and needed > desired:
            reason = f"backlog {depth.total} needs {needed} tasks, capped at max_workers {policy.max_workers}"
        elif desired == depth.in_flight and needed < depth.in_flight:
            reason = f"{depth.in_flight} jobs in flight keep {desired} tasks"
        else:
            reason = f"backlog {depth.total} at {policy.jobs_per_task} jobs per task needs {needed} tasks"
        return Decision(desired, reason, None)
    since = idle_since or now
    idle_s = (now - since).total_seconds()
    if idle_s >= policy.scale_in_cooldown_s:
        return Decision(0, f"queue empty for {idle_s:.0f} s (cool-down {policy.scale_in_cooldown_s:.0f} s)", since)
    desired = min(tasks, 1)
    return Decision(desired, f"queue empty for {idle_s:.0f} s, keeping {desired} warm through the cool-down", since)
