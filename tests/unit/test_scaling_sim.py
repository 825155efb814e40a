"""The scaling simulator's model on traces small enough to reason about by hand."""

from __future__ import annotations

import pytest

from bench.bench_scaling_sim import ORACLE_WAIT_S, Timings, always_on, oracle, simulate, traces
from comfyserve.service.scaling import ScalingPolicy

POLICY = ScalingPolicy()


def test_one_job_from_zero_with_a_warm_pool() -> None:
    run = simulate([(10.0, 5.0)], POLICY, Timings(), horizon_s=0)
    # nudge 2 s after the enqueue, instance launch 2 s later, warm boot 45 s, task start 25 s
    assert run.waits == [pytest.approx(74.0, abs=1.0)]
    assert run.first_start_s == pytest.approx(74.0, abs=1.0)
    # the instance ran from launch to one scaler period + cool-down + linger after its job, plus a pool refill
    assert 300 + 70 + 5 + 300 <= run.instance_s <= 300 + 70 + 5 + 60 + 300 + 60 + 60


def test_schedule_only_waits_for_the_minute_and_managed_capacity_for_its_datapoint() -> None:
    timings = Timings(nudge_s=None, capacity_lag="managed", linger_s=900.0)
    run = simulate([(1.0, 5.0)], POLICY, timings, horizon_s=0)
    # scaler at t=60, CapacityProviderReservation at t=120 + 15 s, boot 45 s, start 25 s
    assert run.waits == [pytest.approx(204.0, abs=1.0)]


def test_the_oracle_keeps_its_budget_and_the_fleet_none() -> None:
    jobs, _ = traces(seed=3)["steady"]
    best = oracle(jobs, POLICY.max_workers, ORACLE_WAIT_S, Timings())
    assert max(best.waits) <= ORACLE_WAIT_S
    fleet = always_on(jobs, POLICY.max_workers, horizon_s=2 * 3600)
    assert fleet.instance_s >= POLICY.max_workers * 2 * 3600
    assert best.instance_s < fleet.instance_s
