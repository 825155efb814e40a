"""Scaling simulator: arrival traces replayed through the scaler's own decision function
(comfyserve.service.scaling.desired_count) with the delays of ECS on EC2 GPU capacity, against an always-on fleet
and an oracle that knows the future. Prints the figures and writes bench/results/scaling_sim.json.

    python -m bench.bench_scaling_sim

Model (one GPU instance runs one worker task; every timing below is a documented assumption, see
docs/SCALING.md): the scaler runs every ``period_s`` and, when nudged, ``nudge_s`` after each enqueue; it reads
visible and in-flight messages (``metric_lag_s`` old for the CloudWatch variant) and sets the service's desired
count. New tasks wait for an instance: the capacity provider launches one ``capacity_lag`` after the task is
provisioning (managed scaling: the next one-minute CapacityProviderReservation datapoint + alarm; direct: the
scaler sizes the ASG itself), from the stopped warm pool (``warm_boot_s``) or cold (``cold_boot_s``, image
pull included); the task then starts and loads its models (``task_start_s``). Busy tasks are protected; a
stopped task's instance lingers ``linger_s`` before it terminates (managed scaling's 15-minute scale-in), and
each warm-pool instance used is replaced at a cost of ``refill_s`` instance-seconds.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import percentile, write_results
from comfyserve.ports import QueueDepth
from comfyserve.service.scaling import ScalingPolicy, desired_count

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
GPU_PRICE_PER_HOUR = 0.8048  # g6.xlarge (1 x L4) on-demand, us-east-1
ORACLE_WAIT_S = 30.0  # the oracle's wait budget: what "good service" means for the comparison
TARGETS = {"first_job_s": 90.0, "p95_vs_oracle": 2.0, "gpu_hours_vs_oracle": 1.2}


@dataclass(frozen=True)
class Timings:
    period_s: int = 60  # EventBridge schedule
    nudge_s: float | None = 2.0  # Job Queued -> bus rule -> scaler; None: schedule only
    metric_lag_s: int = 0  # GetQueueAttributes is current; CloudWatch SQS metrics lag 1-5 min
    capacity_lag: str = "direct"  # "direct" | "managed"
    warm_pool: bool = True
    warm_boot_s: float = 45.0  # stopped -> running + ECS agent registered (image already on the volume)
    cold_boot_s: float = 330.0  # launch + boot 70 s, agent 20 s, 15 GB image pull ~240 s
    task_start_s: float = 25.0  # container start 5 s + worker start and model load 20 s
    linger_s: float = 60.0  # managed scaling: 900 s of low CapacityProviderReservation before scale-in
    refill_s: float = 300.0  # a warm-pool replacement boots, pulls the image, stops


@dataclass(eq=False)
class Task:
    ready_at: float  # inf until its instance is running
    instance: Instance | None
    free_at: float = 0.0
    busy_until: float | None = None


@dataclass(eq=False)
class Instance:
    launched_at: float
    ready_at: float
    task: Task | None = None
    empty_since: float | None = None
    ended_at: float | None = None


@dataclass
class Run:
    waits: list[float] = field(default_factory=list)
    instance_s: float = 0.0
    busy_s: float = 0.0
    first_start_s: float | None = None
    peak_tasks: int = 0


def simulate(jobs: list[tuple[float, float]], policy: ScalingPolicy, timings: Timings, horizon_s: float) -> Run:
    """``jobs``: (arrival, duration) sorted by arrival. Runs until every job is done and the fleet is at zero."""
    queue: deque[tuple[float, float]] = deque()
    tasks: list[Task] = []
    instances: list[Instance] = []
    pending: list[tuple[float, Task]] = []  # (launch time, task waiting for an instance)
    nudges: list[float] = []
    history: deque[int] = deque([0] * (timings.metric_lag_s + 1), maxlen=timings.metric_lag_s + 1)
    run = Run()
    desired, idle_since, next_job, t = 0, None, 0, 0
    while True:
        while next_job < len(jobs) and jobs[next_job][0] <= t:
            queue.append(jobs[next_job])
            if timings.nudge_s is not None:
                heapq.heappush(nudges, jobs[next_job][0] + timings.nudge_s)
            next_job += 1
        for task in tasks:
            if task.busy_until is not None and task.busy_until <= t:
                task.free_at, task.busy_until = task.busy_until, None
        while pending and pending[0][0] <= t:
            launch, task = pending.pop(0)
            if task not in tasks:
                continue
            boot = timings.warm_boot_s if timings.warm_pool else timings.cold_boot_s
            if timings.warm_pool:
                run.instance_s += timings.refill_s
            instance = Instance(launched_at=launch, ready_at=launch + boot, task=task)
            instances.append(instance)
            task.instance, task.ready_at = instance, instance.ready_at + timings.task_start_s
        for task in sorted(tasks, key=lambda item: item.free_at):
            if queue and task.busy_until is None and task.ready_at <= t:
                arrival, duration = queue.popleft()
                start = max(arrival, task.free_at, task.ready_at)
                task.busy_until = start + duration
                run.waits.append(start - arrival)
                run.busy_s += duration
                if run.first_start_s is None:
                    run.first_start_s = start - jobs[0][0]
        history.append(len(queue))
        nudged = False
        while nudges and nudges[0] <= t:
            heapq.heappop(nudges)
            nudged = True
        if t % timings.period_s == 0 or nudged:
            in_flight = sum(task.busy_until is not None for task in tasks)
            depth = QueueDepth(visible=history[0], in_flight=in_flight)
            decision = desired_count(depth, desired, EPOCH + timedelta(seconds=t), idle_since, policy)
            idle_since = decision.surplus_since
            desired = decision.desired
            _apply(desired, t, tasks, pending, instances, timings)
        run.peak_tasks = max(run.peak_tasks, len(tasks))
        for instance in instances:
            lingering = instance.ended_at is None and instance.task is None and instance.empty_since is not None
            if lingering and t - (instance.empty_since or 0.0) >= timings.linger_s:
                instance.ended_at = t
        done = next_job == len(jobs) and not queue and all(task.busy_until is None for task in tasks)
        if done and desired == 0 and t >= horizon_s and all(i.ended_at is not None for i in instances):
            break
        t += 1
    run.instance_s += sum((i.ended_at or t) - i.launched_at for i in instances)
    return run


def _apply(
    desired: int,
    t: int,
    tasks: list[Task],
    pending: list[tuple[float, Task]],
    instances: list[Instance],
    timings: Timings,
) -> None:
    while len(tasks) < desired:
        task = Task(ready_at=math.inf, instance=None, free_at=t)
        spare = next((i for i in instances if i.ended_at is None and i.task is None), None)
        if spare is not None:  # an instance still lingering takes the task at once
            spare.task, spare.empty_since = task, None
            task.instance, task.ready_at = spare, max(t, spare.ready_at) + timings.task_start_s
        else:
            pending.append((_launch_time(t, timings), task))
        tasks.append(task)
    # Scale-in stops tasks without a job: not yet started ones first, busy ones are protected.
    idle = sorted((task for task in tasks if task.busy_until is None), key=lambda task: task.ready_at, reverse=True)
    for task in idle[: max(0, len(tasks) - desired)]:
        tasks.remove(task)
        if task.instance is not None:
            task.instance.task, task.instance.empty_since = None, t


def _launch_time(t: int, timings: Timings) -> float:
    if timings.capacity_lag == "managed":
        return (t // 60 + 1) * 60 + 15  # next CapacityProviderReservation datapoint, then the alarm
    return t + 2.0


def oracle(jobs: list[tuple[float, float]], max_workers: int, budget_s: float, timings: Timings) -> Run:
    """Knows every arrival and keeps every wait within ``budget_s`` at the least GPU time it can find: a job
    goes to the worker that frees up last within the budget (the shortest idle gap); only when none does is
    another worker booted from the warm pool (paying its boot, start and pool refill), timed to be ready at
    the arrival. A worker idles through a gap shorter than a restart costs and stops over a longer one."""
    restart_s = timings.warm_boot_s + timings.task_start_s + timings.refill_s
    free: list[float] = []  # sorted worker free times
    run = Run(first_start_s=0.0)
    for arrival, duration in jobs:
        latest = bisect.bisect_right(free, arrival + budget_s) - 1
        if latest >= 0 or len(free) >= max_workers:
            free_at = free.pop(max(latest, 0))
            start = max(arrival, free_at)
            run.instance_s += min(max(0.0, start - free_at), restart_s)
        else:
            start = arrival
            run.instance_s += restart_s
        run.waits.append(start - arrival)
        run.busy_s += duration
        run.instance_s += duration
        bisect.insort(free, start + duration)
        run.peak_tasks = max(run.peak_tasks, len(free))
    return run


def always_on(jobs: list[tuple[float, float]], workers: int, horizon_s: float) -> Run:
    free = [0.0] * workers
    run = Run(first_start_s=0.0, peak_tasks=workers)
    for arrival, duration in jobs:
        free_at = heapq.heappop(free)
        start = max(arrival, free_at)
        run.waits.append(start - arrival)
        run.busy_s += duration
        heapq.heappush(free, start + duration)
    run.instance_s = workers * max(horizon_s, max(free))
    return run


def durations(rng: random.Random, count: int) -> list[float]:
    """SDXL-class jobs on an L4/A10G: lognormal, median 12 s, ~4-40 s."""
    return [min(120.0, rng.lognormvariate(math.log(12.0), 0.5)) for _ in range(count)]


def poisson(rng: random.Random, rate: float, start: float, end: float) -> list[float]:
    times: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return times
        times.append(t)


def traces(seed: int) -> dict[str, tuple[list[tuple[float, float]], float]]:
    """name -> (jobs, horizon seconds)."""
    rng = random.Random(seed)
    steady = poisson(rng, 1 / 6, 0, 2 * 3600)  # 600 jobs an hour for two hours
    burst = sorted(rng.uniform(0, 60) for _ in range(500))  # 500 jobs within a minute, from zero
    day = 24 * 3600
    peak = 0.35  # jobs per second at 13:00; none from 20:00 to 06:00
    candidates = poisson(rng, peak, 0, day)
    diurnal = [t for t in candidates if rng.random() < _diurnal(t) / peak]
    result = {}
    for name, arrivals, horizon in (
        ("steady", steady, 2 * 3600),
        ("burst_500", burst, 3600),
        ("diurnal", diurnal, day),
    ):
        result[name] = (list(zip(arrivals, durations(rng, len(arrivals)), strict=True)), float(horizon))
    return result


def _diurnal(t: float) -> float:
    hour = (t / 3600) % 24
    return 0.0 if not 6 <= hour < 20 else 0.35 * math.sin(math.pi * (hour - 6) / 14)


VARIANTS: dict[str, Timings] = {
    "scaler_direct_warm": Timings(),
    "scaler_direct_cold": Timings(warm_pool=False),
    "scaler_managed_warm": Timings(capacity_lag="managed", linger_s=900.0),
    "schedule_only_managed_warm": Timings(nudge_s=None, capacity_lag="managed", linger_s=900.0),
    "cloudwatch_lag_managed_warm": Timings(nudge_s=None, metric_lag_s=180, capacity_lag="managed", linger_s=900.0),
}


def figures(run: Run) -> dict[str, Any]:
    hours = run.instance_s / 3600
    busy = run.busy_s / 3600
    return {
        "wait_p50_s": round(percentile(run.waits, 0.50), 1),
        "wait_p95_s": round(percentile(run.waits, 0.95), 1),
        "wait_p99_s": round(percentile(run.waits, 0.99), 1),
        "wait_max_s": round(max(run.waits), 1),
        "gpu_hours": round(hours, 2),
        "busy_hours": round(busy, 2),
        "idle_hours": round(hours - busy, 2),
        "idle_cost_usd": round((hours - busy) * GPU_PRICE_PER_HOUR, 2),
        "cost_usd": round(hours * GPU_PRICE_PER_HOUR, 2),
        "first_job_started_s": None if run.first_start_s is None else round(run.first_start_s, 1),
        "peak_tasks": run.peak_tasks,
    }


def compare(jobs: list[tuple[float, float]], horizon: float, policy: ScalingPolicy, timings: Timings) -> dict[str, Any]:
    best = figures(oracle(jobs, policy.max_workers, ORACLE_WAIT_S, timings))
    row = figures(simulate(jobs, policy, timings, horizon))
    row["p95_vs_oracle"] = round(row["wait_p95_s"] / best["wait_p95_s"], 2)
    row["gpu_hours_vs_oracle"] = round(row["gpu_hours"] / best["gpu_hours"], 2)
    return row


def main() -> None:
    policy = ScalingPolicy()
    results: dict[str, Any] = {
        "policy": policy.model_dump(),
        "oracle_wait_budget_s": ORACLE_WAIT_S,
        "targets": TARGETS,
        "timings": {name: asdict(timings) for name, timings in VARIANTS.items()},
        "gpu_price_per_hour": GPU_PRICE_PER_HOUR,
        "traces": {},
        "seeds": {},
    }
    main_timings = VARIANTS["scaler_direct_warm"]
    for name, (jobs, horizon) in traces(seed=7).items():
        rows: dict[str, Any] = {
            "jobs": len(jobs),
            "oracle": figures(oracle(jobs, policy.max_workers, ORACLE_WAIT_S, main_timings)),
            "always_on": figures(always_on(jobs, policy.max_workers, horizon)),
        }
        for variant, timings in VARIANTS.items():
            rows[variant] = compare(jobs, horizon, policy, timings)
        results["traces"][name] = rows
        print(f"\n{name}: {len(jobs)} jobs")
        print(
            f"  {'policy':30} {'p50':>6} {'p95':>6} {'p99':>6} {'GPU-h':>7} {'idle $':>7} {'first':>6}"
            f" {'p95x':>5} {'GPUx':>5}"
        )
        for variant, row in rows.items():
            if isinstance(row, dict):
                print(
                    f"  {variant:30} {row['wait_p50_s']:6} {row['wait_p95_s']:6} {row['wait_p99_s']:6} "
                    f"{row['gpu_hours']:7} {row['idle_cost_usd']:7} {row['first_job_started_s']!s:>6} "
                    f"{row.get('p95_vs_oracle', '')!s:>5} {row.get('gpu_hours_vs_oracle', '')!s:>5}"
                )
    print("\nscaler_direct_warm over other seeds (p95 x oracle, GPU-hours x oracle):")
    for seed in range(1, 6):
        rows = {name: compare(jobs, horizon, policy, main_timings) for name, (jobs, horizon) in traces(seed).items()}
        results["seeds"][seed] = {
            name: {key: row[key] for key in ("p95_vs_oracle", "gpu_hours_vs_oracle", "first_job_started_s")}
            for name, row in rows.items()
        }
        print(
            f"  seed {seed}: "
            + " | ".join(f"{name} {row['p95_vs_oracle']}x {row['gpu_hours_vs_oracle']}x" for name, row in rows.items())
        )
    write_results("scaling_sim", results)


if __name__ == "__main__":
    main()
