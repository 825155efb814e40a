"""Scaling simulator, calibrated: the deployed configuration (``infra.settings.StackSettings`` defaults) under
each way of starting GPU capacity, with every timing drawn from a sourced distribution (bench/scaling_inputs.py)
and the scaler's own decision function (bench/scaling_model.py). Writes bench/results/scaling_sim.json and the
scenario table of docs/SCALING.md.

    python -m bench.bench_scaling_sim

Figures per scenario: the first job from zero (a job arriving at an idle fleet, from its arrival until a worker
takes it, and until its model is loaded), p50 and p95 over many draws; p95 queue wait on three traces; what an
idle day costs.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, write_results
from bench.scaling_inputs import Deployed, Dist, Timings, fixed
from bench.scaling_model import Run, Scenario, simulate
from bench.scaling_report import update_scaling_doc

TARGET_FIRST_JOB_P50_S = 90.0
DRAWS = 400  # starts from zero per scenario
JOB_S = 12.0  # the first job's own run time (it does not count towards the first-job figure)
TRACE_WORKERS = 10  # the fleet the traces' rates were drawn for; they are scaled to the deployed max_workers

SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "no_pool": ("no warm pool (direct path)", Scenario(pool="none")),
    "stopped_unprepared_managed": (
        "stopped pool, unprepared, managed scaling (the stack before the preparation hook)",
        Scenario(prepared=False, capacity="managed"),
    ),
    "stopped_prepared_managed": ("stopped pool, prepared, managed scaling", Scenario(capacity="managed")),
    "stopped_prepared_direct": ("stopped pool, prepared, direct path", Scenario()),
    "running_pool": ("running pool (direct path)", Scenario(pool="running")),
    "always_on_1": ("one always-on worker, then the direct path", Scenario(always_on=1)),
}
# The deployed default's first job with its checkpoint from other tiers (or a smaller checkpoint).
MODEL_VARIANTS: dict[str, tuple[str, Scenario, Timings]] = {
    "sdxl_efs": ("SDXL 6.9 GB from the EFS cache", Scenario(), Timings()),
    "sdxl_hot_set_gp3_125": (
        "SDXL staged on the root volume (gp3 at 125 MiB/s)",
        Scenario(model_tier="ebs"),
        Timings(),
    ),
    "sdxl_hot_set_gp3_500": (
        "SDXL staged on the root volume (gp3 at 500 MiB/s, the stack's default with `hot_models`)",
        Scenario(model_tier="ebs"),
        Timings(ebs_mib_s=fixed(500.0, "the stack's root volume throughput with hot_models")),
    ),
    "sd15_efs": ("SD1.5 2.1 GB from the EFS cache", Scenario(), Timings(model_gb=2.1)),
}


def deployed_scenario(deployed: Deployed) -> Scenario:
    """The stack as deployed: its warm pool (prepared by the preparation hook), the scaler's direct path where
    it sizes the group, the hot set's tier, the backend."""
    return Scenario(
        pool="stopped" if deployed.warm_pool else "none",
        capacity="direct" if deployed.direct_capacity else "managed",
        model_tier="ebs" if deployed.hot_set else "efs",
        backend="comfyui" if deployed.backend == "comfyui" else "builtin",
    )


def deployed_timings(deployed: Deployed) -> Timings:
    """The timings with the root volume's throughput as deployed."""
    rate = float(deployed.volume_mib_s)
    return replace(Timings(), ebs_mib_s=Dist(rate, rate, rate, Timings().ebs_mib_s.source))


def first_jobs(deployed: Deployed, scenario: Scenario, timings: Timings, draws: int = DRAWS) -> dict[str, float]:
    """p50 and p95 of the first job from zero (one job at a random second of the scaler's minute): until a
    worker receives it (its status turns running), and until its model is loaded (its sampling starts)."""
    policy = deployed.policy()
    started: list[float] = []
    loaded: list[float] = []
    for seed in range(draws):
        rng = random.Random(seed)
        jobs = [(rng.uniform(0, 60), JOB_S)]
        run = simulate(jobs, policy, scenario, timings, deployed.warm_pool, rng, until_first_job=True)
        assert run.first_job_s is not None and run.first_loaded_s is not None
        started.append(run.first_job_s)
        loaded.append(run.first_loaded_s)
    return {
        "p50_s": round(percentile(started, 0.5), 1),
        "p95_s": round(percentile(started, 0.95), 1),
        "loaded_p50_s": round(percentile(loaded, 0.5), 1),
        "loaded_p95_s": round(percentile(loaded, 0.95), 1),
    }


def idle_cost_per_day(deployed: Deployed, scenario: Scenario) -> float:
    """A day without a job: stopped pool instances cost their volume, running ones and always-on workers the
    GPU hour."""
    pool = 0 if scenario.pool == "none" else deployed.warm_pool
    running = scenario.always_on + (pool if scenario.pool == "running" else 0)
    volumes = pool + scenario.always_on
    return round(running * 24 * deployed.price_per_hour + volumes * deployed.stopped_instance_per_day, 2)


def durations(rng: random.Random, count: int, cap_s: float) -> list[float]:
    """SDXL-class jobs on an L4/A10G (an assumption): lognormal, median 12 s, ~4-40 s, capped at the timeout."""
    return [min(cap_s, rng.lognormvariate(math.log(12.0), 0.5)) for _ in range(count)]


def poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    times: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return times
        times.append(t)


def traces(seed: int, cap_s: float, scale: float = 1.0) -> dict[str, tuple[list[tuple[float, float]], float]]:
    """name -> (jobs, horizon seconds): steady Poisson 600 jobs/h for 2 h, 500 jobs within a minute from zero,
    a day with a sine-shaped rate between 06:00 and 20:00 (peak 0.35 jobs/s) and none at night. ``scale``
    multiplies the steady and diurnal rates (they were drawn for a fleet of 10 workers)."""
    rng = random.Random(seed)
    steady = poisson(rng, scale / 6, 0, 2 * 3600)
    burst = sorted(rng.uniform(0, 60) for _ in range(500))
    day = 24 * 3600
    peak = 0.35 * scale
    diurnal = [t for t in poisson(rng, peak, 0, day) if rng.random() < _diurnal(t)]
    return {
        name: (list(zip(arrivals, durations(rng, len(arrivals), cap_s), strict=True)), float(horizon))
        for name, arrivals, horizon in (
            ("steady", steady, 2 * 3600),
            ("burst_500", burst, 3600),
            ("diurnal", diurnal, day),
        )
    }


def _diurnal(t: float) -> float:
    """The day's rate as a share of its peak."""
    hour = (t / 3600) % 24
    return 0.0 if not 6 <= hour < 20 else math.sin(math.pi * (hour - 6) / 14)


def trace_figures(run: Run, price_per_hour: float) -> dict[str, float]:
    hours = run.instance_s / 3600
    return {
        "wait_p50_s": round(percentile(run.waits, 0.5), 1),
        "wait_p95_s": round(percentile(run.waits, 0.95), 1),
        "gpu_hours": round(hours, 2),
        "idle_gpu_hours": round(hours - run.busy_s / 3600, 2),
        "cost_usd": round(hours * price_per_hour, 2),
        "peak_instances": run.peak_instances,
    }


def run_all(deployed: Deployed, timings: Timings, draws: int = DRAWS) -> dict[str, Any]:
    policy = deployed.policy()
    target = deployed_scenario(deployed)
    matching = (name for name, (_, s) in SCENARIOS.items() if replace(s, backend=target.backend) == target)
    default = next(matching, "deployed")
    rows = {**SCENARIOS, "deployed": ("the deployed configuration", target)} if default == "deployed" else SCENARIOS
    trace_set = traces(seed=7, cap_s=min(120.0, deployed.job_timeout_s), scale=deployed.max_workers / TRACE_WORKERS)
    scenarios: dict[str, Any] = {}
    for name, (label, scenario) in rows.items():
        scenario = replace(scenario, backend=target.backend)
        row: dict[str, Any] = {
            "label": label,
            "scenario": asdict(scenario),
            "first_job": first_jobs(deployed, scenario, timings, draws),
            "idle_cost_per_day_usd": idle_cost_per_day(deployed, scenario),
            "traces": {},
        }
        for trace, (jobs, horizon) in trace_set.items():
            run = simulate(jobs, policy, scenario, timings, deployed.warm_pool, random.Random(7), horizon)
            row["traces"][trace] = trace_figures(run, deployed.price_per_hour)
        scenarios[name] = row
        first = row["first_job"]
        print(f"{name:28} first job p50 {first['p50_s']:6} p95 {first['p95_s']:6} loaded p50 {first['loaded_p50_s']}")
    models = {
        name: {"label": label, **first_jobs(deployed, replace(target, model_tier=scenario.model_tier), variant, draws)}
        for name, (label, scenario, variant) in MODEL_VARIANTS.items()
    }
    p50 = scenarios[default]["first_job"]["p50_s"]
    return {
        "deployed": asdict(deployed),
        "deployed_scenario": default,
        "target_first_job_p50_s": TARGET_FIRST_JOB_P50_S,
        "meets_target": p50 <= TARGET_FIRST_JOB_P50_S,
        "draws": draws,
        "traces": {name: {"jobs": len(jobs), "horizon_s": horizon} for name, (jobs, horizon) in trace_set.items()},
        "trace_rate_scale": deployed.max_workers / TRACE_WORKERS,
        "scenarios": scenarios,
        "first_job_by_model": models,
        "timings": timings.sources(),
        "image_gb": timings.image_gb,
        "model_gb": timings.model_gb,
    }


def main() -> None:
    deployed = Deployed.from_settings()
    results = run_all(deployed, deployed_timings(deployed))
    write_results("scaling_sim", results)
    update_scaling_doc(results)


if __name__ == "__main__":
    main()
