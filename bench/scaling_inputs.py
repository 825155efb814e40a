"""The scaling simulator's inputs: the deployed configuration, read from the stack's own settings
(``infra.settings.StackSettings`` defaults), and every timing as a distribution with its source beside it.

A source is a published figure (AWS documentation, an AWS blog post, a tracked issue) or one of our own
benchmarks (bench/results/); where no publication gives a number, the spread is our estimate and says so. The
figures to replace by measurement on a real account are exactly the ``estimate`` ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from comfyserve.service.scaling import ScalingPolicy
from infra.settings import StackSettings

# On-demand Linux prices, us-east-1 (https://aws.amazon.com/ec2/pricing/on-demand/), per instance-hour.
GPU_PRICE_PER_HOUR = {"g5.xlarge": 1.006, "g6.xlarge": 0.8048, "g6e.xlarge": 1.861}
# gp3 storage, us-east-1 (https://aws.amazon.com/ebs/pricing/): what a stopped warm-pool instance costs.
GP3_PER_GB_MONTH = 0.08
DAYS_PER_MONTH = 30.4
# The worker image, uncompressed: the CUDA 13 runtime base (~2.5 GB) and torch's cu130 build with its nvidia-*
# wheels (~6.5 GB) from gpu_container/, plus comfyserve. An estimate: `docker image inspect` on the built image
# replaces it.
IMAGE_GB = 10.0
# The first job's checkpoint: SDXL-class (6.9 GB, the size the issue names; SD1.5 is 2.1 GB,
# bench/results/txt2img_gpu.json).
MODEL_GB = 6.9


@dataclass(frozen=True)
class Dist:
    """A triangular distribution (low, mode, high) in seconds, or in the unit its name says; low == high is a
    fixed value."""

    low: float
    mode: float
    high: float
    source: str

    def sample(self, rng: random.Random) -> float:
        if self.low == self.high:
            return self.low
        return rng.triangular(self.low, self.high, self.mode)

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3


def fixed(value: float, source: str = "fixed") -> Dist:
    return Dist(value, value, value, source)


@dataclass(frozen=True)
class Timings:
    """Every delay of a start from zero, in the order they happen."""

    nudge_s: Dist = Dist(
        1.2,
        2.0,
        5.0,
        "Job Queued → bus rule → SQS nudge queue → scaler, read with a 1 s batching window "
        "(infra/constructs/scaling.py); EventBridge end-to-end P99 of about 0.13 s (AWS What's New, 2024-03, "
        '"Amazon EventBridge announces up to 94% improvement in end-to-end latency for Event Buses"); Lambda\'s '
        "SQS poller adds up to a second (docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html)",
    )
    scaler_run_s: Dist = Dist(
        0.4,
        0.8,
        3.0,
        "estimate: six in-region API calls (GetQueueAttributes, DescribeServices, S3 GetObject, UpdateService, "
        "DescribeAutoScalingGroups, SetDesiredCapacity); the tail is a Python Lambda's cold start (AWS Compute "
        'blog, "Operating Lambda: Performance optimization, part 1": under 100 ms to over 1 s)',
    )
    managed_reaction_s: Dist = Dist(
        60.0,
        120.0,
        240.0,
        "ECS managed scaling: CapacityProviderReservation is published once a minute and the capacity "
        "provider's target-tracking alarm must breach before the group's desired capacity rises "
        "(docs.aws.amazon.com/AmazonECS/latest/developerguide/cluster-auto-scaling.html; AWS Containers blog "
        '"Deep dive on Amazon ECS cluster auto scaling"); from zero it starts two instances for one task '
        "(aws/containers-roadmap#1716)",
    )
    asg_start_s: Dist = Dist(
        1.0,
        3.0,
        10.0,
        "estimate: EC2 Auto Scaling starts the scaling activity for a new desired capacity within seconds "
        "(its activity history; no published latency)",
    )
    warm_start_s: Dist = Dist(
        25.0,
        35.0,
        75.0,
        "a stopped warm-pool instance started, booted, its Pending:Wait hook completed at once, InService "
        "(docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html; AWS Compute blog "
        '"Scaling your applications faster with EC2 Auto Scaling Warm Pools"); the spread is an estimate for a '
        "GPU instance (NVIDIA driver load included)",
    )
    running_pool_start_s: Dist = Dist(
        3.0,
        8.0,
        20.0,
        "a running warm-pool instance moved InService: only the Pending:Wait hook and the ASG's state change "
        "(same warm-pool docs; the spread is an estimate)",
    )
    cold_launch_s: Dist = Dist(
        50.0,
        70.0,
        120.0,
        "estimate: RunInstances to running (~15-30 s) and a first boot with cloud-init (ECS config, the NVMe "
        "format) on the ECS GPU AMI; AWS's SD-on-EKS guidance quotes new GPU nodes within 2 minutes "
        "(aws-solutions-library-samples/guidance-for-asynchronous-inference-with-stable-diffusion-on-aws)",
    )
    agent_register_s: Dist = Dist(
        3.0,
        8.0,
        15.0,
        "estimate: the ECS agent starts after cloud-init and registers; with ECS_WARM_POOLS_CHECK=true it "
        "registers only once the instance is InService (docs.aws.amazon.com/AmazonECS/latest/developerguide/"
        "using-warm-pool.html)",
    )
    placement_s: Dist = Dist(
        2.0,
        5.0,
        15.0,
        "estimate: a PROVISIONING task is placed once its capacity registers (cluster-auto-scaling docs above)",
    )
    pull_s_per_gb: Dist = Dist(
        12.0,
        16.0,
        24.0,
        'image pull and extraction: "15-20 GB images take 4-6 min per instance" (AWS Machine Learning blog, '
        '"Reducing container cold start times using SOCI index on DLAMI and DLC"); the root volume is gp3 at its '
        "125 MiB/s baseline (docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html)",
    )
    container_start_s: Dist = Dist(
        1.0,
        3.0,
        8.0,
        "estimate: a container created from layers already on the volume (ECS_IMAGE_PULL_BEHAVIOR=prefer-cached)",
    )
    worker_start_s: Dist = Dist(
        5.0,
        10.0,
        25.0,
        "`comfyserve worker` to its first receive: about 3 s measured on the CPU without the model load "
        "(bench/results/worker_cold_start.json: 6.3-7.9 s with it), plus CUDA init and the CUDA libraries read "
        "from a volume whose page cache a stop emptied (estimate)",
    )
    comfyui_start_s: Dist = Dist(
        10.0,
        14.0,
        25.0,
        "the comfyui backend: ComfyUI ready in 6.8 s on the CPU (bench/results/comfyui_backend.json) plus the "
        "worker and CUDA init (estimate)",
    )
    efs_mib_s: Dist = Dist(
        200.0,
        400.0,
        1000.0,
        "MiB/s, model load from the EFS cache (the NVMe tier is empty after a stop): below EFS's documented "
        "1,500 MiB/s per client (docs.aws.amazon.com/efs/latest/ug/performance.html) for one reader of one "
        "file (estimate)",
    )
    ebs_mib_s: Dist = Dist(
        125.0, 125.0, 125.0, "MiB/s, a hot set staged on the gp3 root volume at its baseline (EBS docs above)"
    )
    linger_s: Dist = Dist(
        900.0,
        900.0,
        900.0,
        "an empty instance stays until ECS lifts its managed termination protection, which managed scaling "
        "does after 15 minutes of low reservation (docs.aws.amazon.com/AmazonECS/latest/developerguide/"
        "managed-termination-protection.html; aws/containers-roadmap#1220); on either path",
    )
    stop_s: Dist = Dist(10.0, 10.0, 10.0, "estimate: a prepared instance stopping into the pool (billed while running)")
    model_gb: float = MODEL_GB
    image_gb: float = IMAGE_GB

    def model_load_s(self, rng: random.Random, tier: str) -> float:
        """Seconds to read the first job's checkpoint from ``tier`` (``memory``: already loaded)."""
        if tier == "memory":
            return 0.0
        rate = (self.efs_mib_s if tier == "efs" else self.ebs_mib_s).sample(rng)
        return self.model_gb * 1024 / rate

    def sources(self) -> dict[str, dict[str, object]]:
        return {
            name: {"low": d.low, "mode": d.mode, "high": d.high, "source": d.source}
            for name, d in vars(self).items()
            if isinstance(d, Dist)
        }


@dataclass(frozen=True)
class Deployed:
    """What the stack deploys, from its settings: the instance, the fleet's bounds, the warm pool."""

    instance_type: str
    max_workers: int
    warm_pool: int
    root_volume_gib: int
    job_timeout_s: int
    seconds_per_job: float
    backend: str
    direct_capacity: bool  # the scaler sizes the group (one family only)
    hot_set: bool  # models staged on the prepared instances' root volume
    volume_mib_s: int  # the root volume's throughput

    @classmethod
    def from_settings(cls, settings: StackSettings | None = None) -> Deployed:
        """The stack's defaults (or ``settings``)."""
        settings = settings or StackSettings()
        instance_type = f"{settings.instance_families[0]}.{settings.instance_size}"
        if instance_type not in GPU_PRICE_PER_HOUR:
            raise ValueError(f"no price for {instance_type}: add it to GPU_PRICE_PER_HOUR")
        return cls(
            instance_type=instance_type,
            max_workers=settings.max_workers,
            warm_pool=settings.warm_pool,
            root_volume_gib=settings.root_volume_gib,
            job_timeout_s=settings.job_timeout_s,
            seconds_per_job=settings.seconds_per_job,
            backend=settings.backend,
            direct_capacity=settings.sizes_group,
            hot_set=bool(settings.hot_models),
            volume_mib_s=settings.volume_throughput,
        )

    @property
    def price_per_hour(self) -> float:
        return GPU_PRICE_PER_HOUR[self.instance_type]

    @property
    def stopped_instance_per_day(self) -> float:
        """EBS only: a stopped instance's root volume."""
        return self.root_volume_gib * GP3_PER_GB_MONTH / DAYS_PER_MONTH

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(max_workers=self.max_workers, seconds_per_job=self.seconds_per_job)
