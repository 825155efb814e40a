"""The scaling simulator's model on cases small enough to reason about by hand (every timing fixed), its inputs
read from the stack's settings, and docs/SCALING.md's table generated from the committed results."""

from __future__ import annotations

import json
import random
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from bench.bench_scaling_sim import SCENARIOS, deployed_scenario, deployed_timings, idle_cost_per_day, run_all
from bench.scaling_inputs import Deployed, Dist, Timings, fixed
from bench.scaling_model import Run, Scenario, simulate
from bench.scaling_report import BEGIN, END, scaling_markdown
from comfyserve.service.scaling import ScalingPolicy
from infra.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
POLICY = ScalingPolicy(max_workers=4)
# Every delay fixed at its distribution's mode; EFS reads the 6.9 GB checkpoint at 400 MiB/s (17.664 s).
MODES: dict[str, Any] = {f.name: fixed(getattr(Timings(), f.name).mode) for f in fields(Timings) if f.type == "Dist"}
FIXED = Timings(**MODES)
LOAD_S = 6.9 * 1024 / 400


def run(jobs: list[tuple[float, float]], scenario: Scenario, pool: int = 1, until_first_job: bool = False) -> Run:
    return simulate(jobs, POLICY, scenario, FIXED, pool, random.Random(0), until_first_job=until_first_job)


def test_fixed_timings_are_the_modes() -> None:
    assert isinstance(FIXED.warm_start_s, Dist) and FIXED.warm_start_s.low == FIXED.warm_start_s.high == 35.0
    assert FIXED.efs_mib_s.mode == 400.0 and FIXED.linger_s.mode == 900.0


def test_one_job_from_zero_through_a_prepared_stopped_pool_and_the_direct_path() -> None:
    first = run([(10.0, 5.0)], Scenario(), until_first_job=True)
    # nudge 2 s → scaler at 12; run 0.8 + ASG 3 → launch 15.8; warm start 35 + agent 8 → registered 58.8;
    # placement 5 + container 3 + worker 10 → ready 76.8, taken at the next second (77): 67 s after arrival
    assert first.first_job_s == pytest.approx(67.0)
    assert first.first_loaded_s == pytest.approx(67.0 + LOAD_S)

    whole = run([(10.0, 5.0)], Scenario())
    assert whole.peak_instances == 1 and whole.waits == [pytest.approx(67.0)]
    # billed: the instance from launch until its task stopped (cool-down) plus 900 s of linger, and the pool's
    # refill (cold launch 70 + image pull 10 GB x 16 s + stop 10)
    refill = 70 + 160 + 10
    assert whole.instance_s >= 900 + refill + (77 - 15.8) + LOAD_S + 5


def test_managed_scaling_waits_for_its_alarm_and_starts_two_instances_from_zero() -> None:
    first = run([(10.0, 5.0)], Scenario(capacity="managed"), until_first_job=True)
    # as above, plus the reservation alarm's 120 s before the group grows
    assert first.first_job_s == pytest.approx(67.0 + 120)
    whole = run([(10.0, 5.0)], Scenario(capacity="managed"))
    assert whole.peak_instances == 2  # CapacityProviderReservation 200: a second, empty instance lingers


def test_an_unprepared_pool_pulls_the_image_and_no_pool_boots_cold() -> None:
    unprepared = run([(10.0, 5.0)], Scenario(prepared=False), until_first_job=True)
    assert unprepared.first_job_s == pytest.approx(67.0 + 160)  # 10 GB at 16 s/GB
    cold = run([(10.0, 5.0)], Scenario(pool="none"), until_first_job=True)
    assert cold.first_job_s == pytest.approx(67.0 - 35 + 70 + 160)  # cold launch instead of the warm start


def test_the_pool_holds_one_instance_so_a_second_task_starts_cold() -> None:
    jobs = [(10.0 + i * 0.1, 300.0) for i in range(5)]  # 5 jobs at 4 per task: 2 tasks at once
    result = run(jobs, Scenario())
    assert result.peak_instances == 2
    # the first task's instance comes from the pool; the second launches cold and pulls the image (70 + 160
    # instead of 35) while the pool refills
    assert sorted(result.waits)[:2] == [pytest.approx(67.0, abs=1), pytest.approx(67.0 - 35 + 70 + 160, abs=1)]


def test_a_running_pool_and_an_always_on_worker() -> None:
    running = run([(10.0, 5.0)], Scenario(pool="running"), until_first_job=True)
    assert running.first_job_s == pytest.approx(67.0 - 35 + 8)
    always = run([(10.0, 5.0)], Scenario(always_on=1), until_first_job=True)
    assert always.first_job_s == 0.0 and always.first_loaded_s == 0.0  # its model is already in memory


def test_the_deployed_configuration_comes_from_the_stack_settings() -> None:
    deployed = Deployed.from_settings()
    defaults = StackSettings()
    assert (deployed.max_workers, deployed.warm_pool, deployed.job_timeout_s) == (
        defaults.max_workers,
        defaults.warm_pool,
        defaults.job_timeout_s,
    )
    assert deployed.instance_type == f"{defaults.instance_families[0]}.{defaults.instance_size}"
    assert deployed_scenario(deployed) == SCENARIOS["stopped_prepared_direct"][1]

    spot = Deployed.from_settings(StackSettings(spot=True, instance_families=("g5",), max_workers=8))
    assert (spot.instance_type, spot.warm_pool, spot.policy().max_workers) == ("g5.xlarge", 0, 8)
    assert deployed_scenario(spot).pool == "none"
    with pytest.raises(ValueError, match=r"^no price for g6\.2xlarge"):
        Deployed.from_settings(StackSettings(instance_size="2xlarge"))


def test_several_families_or_a_hot_set_change_the_deployed_scenario() -> None:
    several = replace(Deployed.from_settings(), direct_capacity=False, hot_set=True, volume_mib_s=500)
    assert deployed_scenario(several) == Scenario(capacity="managed", model_tier="ebs")
    assert deployed_timings(several).ebs_mib_s.mode == 500.0
    results = run_all(several, deployed_timings(several), draws=5)
    assert results["deployed_scenario"] == "deployed"  # no listed scenario stages a hot set
    assert results["scenarios"]["deployed"]["scenario"]["model_tier"] == "ebs"


def test_idle_cost_per_day() -> None:
    deployed = Deployed.from_settings()
    volume = deployed.root_volume_gib * 0.08 / 30.4
    assert idle_cost_per_day(deployed, Scenario(pool="none")) == 0.0
    assert idle_cost_per_day(deployed, Scenario()) == round(deployed.warm_pool * volume, 2)
    gpu_day = 24 * deployed.price_per_hour
    assert idle_cost_per_day(deployed, Scenario(pool="running")) == round(deployed.warm_pool * (gpu_day + volume), 2)
    assert idle_cost_per_day(deployed, replace(Scenario(), always_on=1)) == round(gpu_day + 2 * volume, 2)


def test_the_committed_results_are_for_the_deployed_defaults_and_in_the_docs() -> None:
    results = json.loads((ROOT / "bench" / "results" / "scaling_sim.json").read_text())
    assert results["deployed"] == json.loads(json.dumps(Deployed.from_settings().__dict__)), (
        "the stack's defaults changed: python -m bench.bench_scaling_sim"
    )
    assert results["timings"] == json.loads(json.dumps(Timings().sources()))
    page = (ROOT / "docs" / "SCALING.md").read_text()
    block = page.split(BEGIN + "\n", 1)[1].split("\n" + END, 1)[0]
    assert block == scaling_markdown(results), "docs/SCALING.md is stale: python -m bench.bench_scaling_sim"


def test_readme_and_scaling_quote_the_deployed_defaults_figure() -> None:
    results = json.loads((ROOT / "bench" / "results" / "scaling_sim.json").read_text())
    first = results["scenarios"][results["deployed_scenario"]]["first_job"]
    quoted = f"about {round(first['p50_s'])} s p50"
    assert quoted in (ROOT / "README.md").read_text()
    assert quoted in (ROOT / "docs" / "SCALING.md").read_text().split("### Against the target", 1)[1]
    assert results["meets_target"] == (first["p50_s"] <= results["target_first_job_p50_s"])
