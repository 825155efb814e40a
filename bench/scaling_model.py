"""The scaling simulator's model: arrivals replayed second by second through the scaler's own decision
(comfyserve.service.scaling.desired_count), with the delays of ECS on EC2 GPU capacity drawn from
:class:`bench.scaling_inputs.Timings`.

One GPU instance runs one worker task. The scaler runs every minute and ``nudge_s`` after each enqueue; it sets
the service's desired count and, on the direct path, the group's desired capacity, so a new task's instance
launches ``scaler_run_s + asg_start_s`` later; through managed scaling alone, ``managed_reaction_s`` more, and
from zero two instances start for one task. An instance comes from the warm pool while it holds one (stopped:
``warm_start_s``; running: ``running_pool_start_s``), else cold (``cold_launch_s``); either way the pool refills
by preparing a new instance (billed while it boots, pulls and stops: ECS forbids ``ReuseOnScaleIn``). The task
starts once the agent registers and ECS places it; it pulls the image unless the instance holds it (a prepared
pool, or an instance that ran a task before), starts the worker, and the first job on a task loads its model
(``model_tier``). An empty instance lingers ``linger_s`` (managed termination protection), taking a new task at
once if one comes.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from bench.scaling_inputs import Timings
from comfyserve.ports import QueueDepth
from comfyserve.service.scaling import ScalingPolicy, desired_count

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SCALER_PERIOD_S = 60


@dataclass(frozen=True)
class Scenario:
    pool: Literal["none", "stopped", "running"] = "stopped"
    prepared: bool = True  # the pool's instances hold the worker image (the preparation hook pulled it)
    capacity: Literal["direct", "managed"] = "direct"
    always_on: int = 0  # tasks kept running whatever the queue (their instances billed all day)
    model_tier: Literal["efs", "ebs", "memory"] = "efs"  # where a task's first job reads its checkpoint
    backend: Literal["builtin", "comfyui"] = "builtin"


@dataclass(eq=False)
class Instance:
    launched_at: float
    ready_at: float  # registered with the cluster
    has_image: bool
    task: Task | None = None
    empty_since: float | None = None
    ended_at: float | None = None


@dataclass(eq=False)
class Task:
    ready_at: float = math.inf  # the worker's first receive; inf until its instance is known
    instance: Instance | None = None
    busy_until: float | None = None
    loaded: bool = False  # its model is in memory


@dataclass
class Run:
    waits: list[float] = field(default_factory=list)  # arrival to the job received by a worker
    first_job_s: float | None = None  # the first arrival to its job received (its status turns running)
    first_loaded_s: float | None = None  # ... and to its model loaded (its sampling starts)
    instance_s: float = 0.0  # billed GPU instance-seconds, pool refills included
    busy_s: float = 0.0
    peak_instances: int = 0


class Fleet:
    """The instances, the tasks on them, the warm pool and the launches on their way."""

    def __init__(self, scenario: Scenario, timings: Timings, warm_pool: int, rng: random.Random) -> None:
        self.scenario = scenario
        self.timings = timings
        self.rng = rng
        self.pool = warm_pool if scenario.pool != "none" else 0
        self.refills: list[float] = []  # times at which a refilling pool instance is ready
        self.instances: list[Instance] = []
        self.tasks: list[Task] = []
        self.launches: list[tuple[float, Task | None]] = []  # (launch time, its task; None: a spare instance)
        self.refill_s = 0.0

    def keep_always_on(self, count: int) -> None:
        for _ in range(count):
            instance = Instance(launched_at=0.0, ready_at=0.0, has_image=True)
            task = Task(ready_at=0.0, instance=instance, loaded=True)
            instance.task = task
            self.instances.append(instance)
            self.tasks.append(task)

    def start_task(self, t: float) -> None:
        """A new task: on a lingering empty instance at once, else on an instance launched for it."""
        task = Task()
        self.tasks.append(task)
        spare = next((i for i in self.instances if i.ended_at is None and i.task is None), None)
        if spare is not None:
            spare.task, spare.empty_since = task, None
            self._place(task, spare, max(t, spare.ready_at))
            return
        timings, rng = self.timings, self.rng
        launch = t + timings.scaler_run_s.sample(rng) + timings.asg_start_s.sample(rng)
        if self.scenario.capacity == "managed":
            launch += timings.managed_reaction_s.sample(rng)
            alive = any(i.ended_at is None for i in self.instances) or bool(self.launches)
            self.launches.append((launch, task))
            if not alive:  # CapacityProviderReservation is 200 with no instance: two start for one task
                self.launches.append((launch, None))
            return
        self.launches.append((launch, task))

    def stop_idle(self, count: int, t: float) -> None:
        """Scale-in: idle tasks stop (not started ones first); busy ones are protected."""
        idle = sorted((task for task in self.tasks if task.busy_until is None), key=lambda k: k.ready_at, reverse=True)
        for task in idle[:count]:
            self.tasks.remove(task)
            self.launches = [(at, other) for at, other in self.launches if other is not task]
            if task.instance is not None:
                task.instance.task, task.instance.empty_since = None, t

    def advance(self, t: float) -> None:
        """Launches that are due, refills that are done, empty instances whose linger is over."""
        while self.refills and self.refills[0] <= t:
            heapq.heappop(self.refills)
            self.pool += 1
        due = [item for item in self.launches if item[0] <= t]
        self.launches = [item for item in self.launches if item[0] > t]
        for launch, task in due:
            instance = self._launch(launch)
            if task is not None:
                instance.task = task
                self._place(task, instance, instance.ready_at)
            else:
                instance.empty_since = instance.ready_at
        for instance in self.instances:
            empty_since = instance.empty_since if instance.ended_at is None and instance.task is None else None
            if empty_since is not None and t - empty_since >= self.timings.linger_s.mean:
                instance.ended_at = t

    def _launch(self, at: float) -> Instance:
        timings, rng = self.timings, self.rng
        if self.pool > 0:
            self.pool -= 1
            running = self.scenario.pool == "running"
            boot = (timings.running_pool_start_s if running else timings.warm_start_s).sample(rng)
            has_image = self.scenario.prepared
            refill = timings.cold_launch_s.sample(rng) + timings.stop_s.sample(rng)
            if self.scenario.prepared:
                refill += timings.image_gb * timings.pull_s_per_gb.sample(rng)
            heapq.heappush(self.refills, at + refill)
            if not running:  # a running pool's instances are billed all along (counted by the caller)
                self.refill_s += refill
        else:
            boot, has_image = timings.cold_launch_s.sample(rng), False
        ready = at + boot + timings.agent_register_s.sample(rng)
        instance = Instance(launched_at=at, ready_at=ready, has_image=has_image)
        self.instances.append(instance)
        return instance

    def _place(self, task: Task, instance: Instance, registered: float) -> None:
        timings, rng = self.timings, self.rng
        task.instance = instance
        ready = registered + timings.placement_s.sample(rng) + timings.container_start_s.sample(rng)
        if not instance.has_image:
            ready += timings.image_gb * timings.pull_s_per_gb.sample(rng)
            instance.has_image = True
        start = timings.comfyui_start_s if self.scenario.backend == "comfyui" else timings.worker_start_s
        task.ready_at = ready + start.sample(rng)

    def billed_s(self, end: float) -> float:
        return sum((i.ended_at if i.ended_at is not None else end) - i.launched_at for i in self.instances)

    def settled(self, floor: int) -> bool:
        live = [i for i in self.instances if i.ended_at is None]
        return not self.launches and not self.refills and len(live) <= floor


def simulate(
    jobs: list[tuple[float, float]],
    policy: ScalingPolicy,
    scenario: Scenario,
    timings: Timings,
    warm_pool: int,
    rng: random.Random,
    horizon_s: float = 0.0,
    until_first_job: bool = False,
) -> Run:
    """``jobs``: (arrival, duration) sorted by arrival. Runs until every job is done and the fleet is back to
    its floor (or, with ``until_first_job``, until the first job runs)."""
    fleet = Fleet(scenario, timings, warm_pool, rng)
    fleet.keep_always_on(scenario.always_on)
    queue: deque[tuple[float, float]] = deque()
    nudges: list[float] = []
    run = Run()
    desired, surplus_since, next_job, t = scenario.always_on, None, 0, 0
    while True:
        while next_job < len(jobs) and jobs[next_job][0] <= t:
            queue.append(jobs[next_job])
            heapq.heappush(nudges, jobs[next_job][0] + timings.nudge_s.sample(rng))
            next_job += 1
        fleet.advance(t)
        for task in fleet.tasks:
            if task.busy_until is not None and task.busy_until <= t:
                task.busy_until = None
        for task in fleet.tasks:
            if queue and task.busy_until is None and task.ready_at <= t:
                arrival, duration = queue.popleft()
                load = 0.0 if task.loaded else timings.model_load_s(rng, scenario.model_tier)
                task.loaded = True
                task.busy_until = t + load + duration
                run.waits.append(t - arrival)
                run.busy_s += duration
                if run.first_job_s is None:
                    run.first_job_s, run.first_loaded_s = t - jobs[0][0], t + load - jobs[0][0]
        if until_first_job and run.first_job_s is not None:
            return run
        nudged = False
        while nudges and nudges[0] <= t:
            heapq.heappop(nudges)
            nudged = True
        if t % SCALER_PERIOD_S == 0 or nudged:
            in_flight = sum(task.busy_until is not None for task in fleet.tasks)
            depth = QueueDepth(visible=len(queue), in_flight=in_flight)
            decision = desired_count(depth, desired, EPOCH + timedelta(seconds=t), surplus_since, policy)
            surplus_since = decision.surplus_since
            desired = max(decision.desired, scenario.always_on)
            while len(fleet.tasks) < desired:
                fleet.start_task(t)
            fleet.stop_idle(len(fleet.tasks) - desired, t)
        run.peak_instances = max(run.peak_instances, sum(i.ended_at is None for i in fleet.instances))
        done = next_job == len(jobs) and not queue and all(task.busy_until is None for task in fleet.tasks)
        if done and desired == scenario.always_on and t >= horizon_s and fleet.settled(scenario.always_on):
            break
        t += 1
    run.instance_s = fleet.billed_s(t) + fleet.refill_s
    if scenario.pool == "running":
        run.instance_s += warm_pool * t
    return run
