"""The scaler's decision over a table of queue states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from comfyserve.ports import QueueDepth
from comfyserve.service.scaling import ScalingPolicy, desired_count

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
# 20 s jobs, 60 s acceptable wait: a task holds 1 + 3 = 4 jobs.
POLICY = ScalingPolicy(
    seconds_per_job=20, target_wait_s=60, max_workers=10, scale_in_delay_s=300, scale_in_cooldown_s=600
)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("visible", "in_flight", "tasks", "since", "desired", "since_after", "reason"),
    [
        # From zero on one message, without waiting for any metric.
        (1, 0, 0, None, 1, None, "backlog 1 at 4 jobs per task needs 1 tasks"),
        (1, 0, 0, ago(3600), 1, None, "backlog 1 at 4 jobs per task needs 1 tasks"),
        (4, 0, 0, None, 1, None, "backlog 4 at 4 jobs per task needs 1 tasks"),
        (5, 0, 0, None, 2, None, "backlog 5 at 4 jobs per task needs 2 tasks"),
        # Visible and in flight both count as backlog; scale-out is immediate and clears the surplus clock.
        (6, 2, 1, None, 2, None, "backlog 8 at 4 jobs per task needs 2 tasks"),
        (36, 4, 4, ago(900), 10, None, "backlog 40 at 4 jobs per task needs 10 tasks"),
        (8, 0, 2, ago(900), 2, None, "backlog 8 at 4 jobs per task needs 2 tasks"),
        (500, 0, 3, None, 10, None, "backlog 500 needs 125 tasks, capped at max_workers 10"),
        # A surplus is held for the scale-in delay, then idle tasks go; busy ones never do.
        (0, 7, 10, None, 10, NOW, "backlog 7 needs 2 of 10 tasks; holding them for 0 s"),
        (0, 7, 10, ago(299), 10, ago(299), "backlog 7 needs 2 of 10 tasks; holding them for 299 s"),
        (0, 7, 10, ago(300), 7, ago(300), "backlog 7 needs 2 tasks after 300 s of surplus; keeping 7"),
        (1, 5, 5, ago(400), 5, ago(400), "5 jobs in flight keep 5 tasks"),
        (2, 1, 5, ago(300), 1, None, "backlog 3 needs 1 tasks after 300 s of surplus; keeping 1"),
        # Empty: every task for one scaler period, then one warm through the cool-down, then zero.
        (0, 0, 4, None, 4, NOW, "queue empty for 0 s, keeping 4 warm through the cool-down"),
        (0, 0, 4, ago(60), 1, ago(60), "queue empty for 60 s, keeping 1 warm through the cool-down"),
        (0, 0, 1, ago(599), 1, ago(599), "queue empty for 599 s, keeping 1 warm through the cool-down"),
        (0, 0, 1, ago(600), 0, ago(600), "queue empty for 600 s (cool-down 600 s)"),
        (0, 0, 0, ago(7200), 0, None, "backlog 0 at 4 jobs per task needs 0 tasks"),
    ],
)
def test_desired_count(
    visible: int,
    in_flight: int,
    tasks: int,
    since: datetime | None,
    desired: int,
    since_after: datetime | None,
    reason: str,
) -> None:
    decision = desired_count(QueueDepth(visible, in_flight), tasks, NOW, since, POLICY)
    assert (decision.desired, decision.surplus_since, decision.reason) == (desired, since_after, reason)
    assert decision.changes(tasks) is (desired != tasks)


BOOTSTRAP = "no catalog published yet, keeping 1 task to publish it"


@pytest.mark.parametrize(
    ("visible", "in_flight", "tasks", "since", "published", "desired", "since_after", "reason"),
    [
        # A ComfyUI fleet without a published catalog: one task, even from zero on an empty queue …
        (0, 0, 0, None, False, 1, None, f"{BOOTSTRAP} (backlog 0 at 4 jobs per task needs 0 tasks)"),
        (0, 0, 1, ago(600), False, 1, ago(600), f"{BOOTSTRAP} (queue empty for 600 s (cool-down 600 s))"),
        # … while the normal decision already keeps one or more, it applies unchanged …
        (0, 0, 1, ago(60), False, 1, ago(60), "queue empty for 60 s, keeping 1 warm through the cool-down"),
        (5, 0, 0, None, False, 2, None, "backlog 5 at 4 jobs per task needs 2 tasks"),
        # … and once the catalog is published, the cool-down stops the last task.
        (0, 0, 1, ago(600), True, 0, ago(600), "queue empty for 600 s (cool-down 600 s)"),
    ],
)
def test_an_unpublished_catalog_keeps_one_task(
    visible: int,
    in_flight: int,
    tasks: int,
    since: datetime | None,
    published: bool,
    desired: int,
    since_after: datetime | None,
    reason: str,
) -> None:
    decision = desired_count(QueueDepth(visible, in_flight), tasks, NOW, since, POLICY, catalog_published=published)
    assert (decision.desired, decision.surplus_since, decision.reason) == (desired, since_after, reason)


def test_long_jobs_get_one_task_per_job() -> None:
    slow = ScalingPolicy(seconds_per_job=300, target_wait_s=60, max_workers=8)
    assert slow.jobs_per_task == 1
    assert desired_count(QueueDepth(3, 2), 2, NOW, None, slow).desired == 5


def test_policy_reads_the_settings_contract() -> None:
    env = {
        "COMFYSERVE_SECONDS_PER_JOB": "12.5",
        "COMFYSERVE_MAX_WORKERS": "3",
        "COMFYSERVE_SCALE_IN_COOLDOWN_S": "120",
    }
    policy = ScalingPolicy.from_env(env)
    assert (policy.seconds_per_job, policy.max_workers, policy.scale_in_cooldown_s) == (12.5, 3, 120)
    with pytest.raises(ValueError) as caught:
        ScalingPolicy.from_env({"COMFYSERVE_MAX_WORKERS": "0"})
    assert str(caught.value) == "COMFYSERVE_MAX_WORKERS: input should be greater than or equal to 1, not '0'"
