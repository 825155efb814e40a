"""The deployment's settings: one typed object read once from CDK context, each with a documented default.

Pass them on the command line (``npx aws-cdk deploy -c spot=true -c max_workers=8``) or under ``context`` in
cdk.json; the context key is the field name. Command-line values arrive as strings and are read by type.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from constructs import Node

from comfyserve.service.scaling import ScalingPolicy
from comfyserve.settings import BackendName, CloudWorkerSettings

GpuFamily = Literal["g5", "g6", "g6e"]
GPU_FAMILIES: tuple[str, ...] = get_args(GpuFamily)
BACKENDS: tuple[str, ...] = get_args(BackendName)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[^/\s][^\s]*$")


class ConfigurationError(ValueError):
    """A deployment the stack refuses to synthesize; its message is the one line ``app.py`` prints."""


@dataclass(frozen=True, kw_only=True)
class StackSettings:
    # The stack's name, also the name of its event bus (COMFYSERVE_EVENT_BUS).
    stack_name: str = "comfyserve"
    # One ECS capacity provider (and Auto Scaling group) per GPU instance family; tasks spread over them by weight.
    instance_families: tuple[GpuFamily, ...] = ("g6",)
    # Instance size in every family; the task asks for one GPU, and every size listed here has local NVMe.
    instance_size: str = "xlarge"
    # Spot capacity (price-capacity-optimized, capacity rebalance). Spot groups cannot keep a warm pool.
    spot: bool = False
    # Most worker tasks (one GPU each) the scaler may run: size it to the account's GPU vCPU quota.
    max_workers: int = 4
    # Stopped instances per family, prepared by the launch lifecycle hook (worker image pulled, hot models
    # staged; EBS cost only). ECS cannot reuse an instance on scale-in: every instance used is replaced by a new
    # one prepared in the background, so size the pool for the burst that must start without a pull.
    warm_pool_size: int = 1
    # "<folder>/<name>" models of the models bucket staged onto the EBS volume of every prepared instance (the
    # hot set): a worker's first job reads them from the instance's own disk instead of EFS.
    hot_models: tuple[str, ...] = ()
    # Throughput of the root gp3 volume (MiB/s, 125 to 1000); unset: 125 (gp3's baseline), 500 with hot_models.
    root_volume_throughput: int | None = None
    # The scaler sets the GPU Auto Scaling group's desired capacity itself (COMFYSERVE_ASG_NAME) besides ECS
    # managed scaling; with several instance_families ECS managed scaling alone sizes the groups.
    direct_capacity: bool = True
    # SSM Session Manager access to the GPU hosts (adds the ssm, ssmmessages and ec2messages endpoints).
    ssm_access: bool = False
    # Deploy into an existing VPC (its isolated subnets, or private-with-egress ones when open_egress) instead
    # of creating one; the VPC endpoints are added to it.
    vpc_id: str | None = None
    # Availability zones of a new VPC (interface endpoints cost per AZ-hour; more AZs find GPUs more often).
    max_azs: int = 2
    # Workers reach the internet through a NAT gateway (custom nodes that download); off: VPC endpoints only.
    open_egress: bool = False
    # Per API key (tenant): steady requests per second, burst, and requests per day.
    api_rate_limit: float = 10.0
    api_burst_limit: int = 20
    api_quota_per_day: int = 10_000
    # Cap on a job's own timeout (seconds).
    job_timeout_s: int = CloudWorkerSettings.model_fields["job_timeout_s"].default
    # Mean GPU seconds of one job: the scaler's backlog-per-task target.
    seconds_per_job: float = ScalingPolicy.model_fields["seconds_per_job"].default
    # Days kept: outputs, dropped files, the event archive, logs.
    retention_days: int = 30
    # Receives of a job message before it goes to the dead-letter queue.
    max_receive_count: int = 3
    # Alarm notifications to this address (a subscription to confirm by e-mail); unset: the topic only.
    alarm_email: str | None = None
    # NVMe cache budget per worker (GiB of the instance store).
    local_cache_gib: int = 200
    # Root EBS volume of a GPU instance (GiB): the AMI plus the pulled worker image.
    root_volume_gib: int = 100
    # The workers' execution backend (COMFYSERVE_BACKEND): comfyui builds gpu_container/'s comfyui target, and the
    # scaler keeps one worker until the fleet's catalog is published.
    backend: BackendName = CloudWorkerSettings.model_fields["backend"].default
    # Worker image: an image URI to run instead of building gpu_container/ (for teams with their own pipeline).
    worker_image: str | None = None
    # Drop-folder prefix -> tenant ("prefix:tenant,…"); unset: the first folder under inbox/ is the tenant.
    drop_tenants: str | None = None
    # Create the account's API Gateway CloudWatch Logs role (needed once per account and Region for API logs).
    api_cloudwatch_role: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.instance_families:
            problems.append("instance_families: name at least one of " + ", ".join(GPU_FAMILIES))
        unknown = [family for family in self.instance_families if family not in GPU_FAMILIES]
        if unknown:
            problems.append(f"instance_families: {', '.join(unknown)} not one of {', '.join(GPU_FAMILIES)}")
        if len(set(self.instance_families)) != len(self.instance_families):
            problems.append("instance_families: a family is named twice")
        if self.backend not in BACKENDS:
            problems.append(f"backend: {self.backend!r} not one of {', '.join(BACKENDS)}")
        for name in ("max_workers", "job_timeout_s", "retention_days", "max_receive_count", "max_azs"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: must be at least 1")
        if self.warm_pool_size < 0:
            problems.append("warm_pool_size: must be 0 or more")
        if self.warm_pool_size > self.max_workers:
            problems.append("warm_pool_size: must not exceed max_workers")
        if self.api_rate_limit <= 0 or self.api_burst_limit < 1 or self.api_quota_per_day < 1:
            problems.append("api_rate_limit, api_burst_limit, api_quota_per_day: must be positive")
        if self.seconds_per_job <= 0:
            problems.append("seconds_per_job: must be positive")
        if self.alarm_email is not None and not _EMAIL.match(self.alarm_email):
            problems.append(f"alarm_email: {self.alarm_email!r} is not an e-mail address")
        if self.vpc_id is not None and not _VPC_ID.match(self.vpc_id):
            problems.append(f"vpc_id: {self.vpc_id!r} is not a VPC id (vpc-…)")
        if self.local_cache_gib < 0 or self.root_volume_gib < 30:
            problems.append("local_cache_gib must be 0 or more, root_volume_gib at least 30")
        if self.root_volume_throughput is not None and not 125 <= self.root_volume_throughput <= 1000:
            problems.append("root_volume_throughput: must be 125 to 1000 (MiB/s)")
        bad_models = [name for name in self.hot_models if not _MODEL_NAME.match(name)]
        if bad_models:
            problems.append(f'hot_models: {", ".join(bad_models)} not "<folder>/<name>"')
        if problems:
            raise ConfigurationError("invalid context settings: " + "; ".join(problems))

    @property
    def warm_pool(self) -> int:
        """Warm instances per family: none with Spot, which EC2 Auto Scaling warm pools do not support."""
        return 0 if self.spot else self.warm_pool_size

    @property
    def sizes_group(self) -> bool:
        """Whether the scaler sizes the Auto Scaling group (one family: the group every task lands in)."""
        return self.direct_capacity and len(self.instance_families) == 1

    @property
    def volume_throughput(self) -> int:
        """The root volume's throughput (MiB/s)."""
        if self.root_volume_throughput is not None:
            return self.root_volume_throughput
        return 500 if self.hot_models else 125

    @property
    def retention_s(self) -> int:
        return self.retention_days * 24 * 3600

    @classmethod
    def from_context(cls, node: Node) -> StackSettings:
        """The settings under their field names in ``node``'s context; absent keys keep their defaults."""
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            raw = node.try_get_context(spec.name)
            if raw is not None:
                values[spec.name] = _read(spec.name, str(spec.type), raw)
        return cls(**values)


def _read(name: str, type_text: str, raw: Any) -> Any:
    """A context value as its field's type: JSON values from cdk.json, strings from ``-c key=value``."""
    text = raw.strip() if isinstance(raw, str) else raw
    try:
        if type_text.startswith("tuple"):
            items = text.split(",") if isinstance(text, str) else list(text)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if type_text.startswith("bool"):
            if isinstance(text, bool):
                return text
            if str(text).lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return str(text).lower() in ("true", "1", "yes")
        if "None" in type_text and str(text).lower() in ("", "none", "null"):
            return None
        if type_text.startswith("int"):
            return int(text)
        if type_text.startswith("float"):
            return float(text)
        return str(text)
    except (TypeError, ValueError):
        raise ConfigurationError(f"context {name}: cannot read {raw!r} as {type_text}") from None
