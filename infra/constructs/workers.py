"""The GPU workers: an ECS cluster on EC2 GPU capacity (one Auto Scaling group and capacity provider per
instance family, from zero), and the worker service whose desired count the scaler sets.

A scale-out starts a stopped instance from the warm pool when there is one. A launch lifecycle hook holds every
new pool instance at ``Warmed:Pending:Wait`` while ``comfyserve-prepare`` (infra/host/prepare.py) pulls the task
definition's worker image onto its EBS volume and stages the hot models, so a start from the pool pulls nothing
(ECS_IMAGE_PULL_BEHAVIOR=prefer-cached); a failed preparation abandons the instance. Leaving the pool
(``Pending:Wait``) completes at once. The instance store (NVMe) is formatted and mounted on every boot (a stopped
instance loses it), holds the worker's local model cache, and links the staged hot models into it. A deploy that
changes the image or the AMI changes the launch template, and an instance refresh replaces the idle and pooled
instances. The AMI and the image's CUDA build come as one pair (:mod:`infra.gpu_platform`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.model_cache import INVENTORY_KEY, WORKER_UID, ModelCache
from infra.gpu_platform import GpuPlatform
from infra.log_groups import service_log_group
from infra.nag import (
    ENV_REASON,
    EXECUTION_ROLE_REASON,
    acknowledge,
    acknowledge_bucket_grant,
    acknowledge_group_arn,
    group_arn,
)

LOCAL_CACHE_DIR = "/var/cache/comfyserve/models"
_HOST_CACHE_MOUNT = "/var/cache/comfyserve"
# On the root EBS volume: survives the warm pool's stop (the instance store does not).
HOT_DIR = "/var/lib/comfyserve/hot"
PREPARE_SCRIPT = Path(__file__).resolve().parents[1] / "host" / "prepare.py"
LIFECYCLE_HOOK = "comfyserve-prepare"
# A multi-GB image pull and the hot set, with room; the default result abandons an instance that never answers.
PREPARE_TIMEOUT = Duration.minutes(30)
GPU_METRICS_NAMESPACE = "comfyserve/gpu"
_AGENT_CONFIG_PATH = "/etc/comfyserve/cloudwatch-agent.json"
# The CloudWatch agent's nvidia_gpu metrics (nvidia_smi_<measurement>) per instance: one worker per instance.
_AGENT_CONFIG = {
    "agent": {"metrics_collection_interval": 60},
    "metrics": {
        "namespace": GPU_METRICS_NAMESPACE,
        "append_dimensions": {"InstanceId": "${aws:InstanceId}"},
        "metrics_collected": {"nvidia_gpu": {"measurement": ["utilization_gpu", "memory_used", "memory_total"]}},
    },
}
STOP_TIMEOUT = Duration.seconds(120)
# ECS ignores the image's HEALTHCHECK: the container definition carries its own (the same command). The worker
# touches its liveness file on every receive and heartbeat; the start period covers the model preload, capped
# at 300 s by ECS (so a task is first judged after 300 s + 3 failed checks 30 s apart).
HEALTH_CHECK = ecs.HealthCheck(
    command=["CMD", "comfyserve", "worker", "--health"],
    interval=Duration.seconds(30),
    timeout=Duration.seconds(5),
    start_period=Duration.seconds(300),
    retries=3,
)
DRAIN_TIMEOUT_S = 90  # the job in hand may finish within the stop timeout
MiB = 1024 * 1024
GiB = 1024 * MiB

# Formats and mounts the first instance-store NVMe device on every boot (a stopped instance loses it), before
# the ECS agent starts; without one the cache directory is on the root volume.
_NVME_SCRIPT = f"""#!/bin/bash
set -euo pipefail
mkdir -p {_HOST_CACHE_MOUNT}
dev=$(ls /dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_* 2>/dev/null | head -n1 || true)
if [ -n "$dev" ] && ! mountpoint -q {_HOST_CACHE_MOUNT}; then
  mkfs.xfs -f "$dev"
  mount -o noatime "$dev" {_HOST_CACHE_MOUNT}
fi
mkdir -p {LOCAL_CACHE_DIR}
if [ -d {HOT_DIR} ]; then cp -rsn {HOT_DIR}/. {LOCAL_CACHE_DIR}/; fi
chown -hR {WORKER_UID}:{WORKER_UID} {LOCAL_CACHE_DIR}
"""
_NVME_UNIT = """[Unit]
Description=comfyserve model cache on the instance store
Before=ecs.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/bin/comfyserve-nvme
[Install]
WantedBy=multi-user.target
"""
# Later boots (a start from the warm pool): complete the lifecycle action before the ECS agent starts. The first
# boot runs the script from the user data instead, and the ECS agent waits for cloud-init (After=cloud-final).
_PREPARE_UNIT = """[Unit]
Description=comfyserve: complete the Auto Scaling launch lifecycle action
Wants=network-online.target docker.service
After=network-online.target docker.service comfyserve-nvme.service
Before=ecs.service
[Service]
Type=oneshot
ExecStart=/usr/bin/python3 /usr/local/bin/comfyserve-prepare
[Install]
WantedBy=multi-user.target
"""

# The ECS agent after cloud-init (the first boot's preparation runs in it) and after this host's own units,
# whatever the AMI's unit says.
_ECS_AFTER = """[Unit]
After=cloud-final.service comfyserve-nvme.service comfyserve-prepare.service
"""


@dataclass(frozen=True)
class WorkerImage:
    """The worker image and, when it is in ECR, its repository (the hosts may pull that one only)."""

    image: ecs.ContainerImage
    repository: ecr.IRepository | None = None


@dataclass(frozen=True, kw_only=True)
class WorkerCapacity:
    """The GPU capacity: families, size, Spot, and warm instances per family."""

    families: tuple[str, ...]
    instance_size: str
    spot: bool
    warm_pool_size: int
    max_instances: int
    root_volume_gib: int
    volume_throughput: int = 125
    hot_models: tuple[str, ...] = ()
    ssm_access: bool = False


class Workers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        capacity: WorkerCapacity,
        image: WorkerImage,
        platform: GpuPlatform,
        environment: dict[str, str],
        model_cache: ModelCache,
        local_cache_bytes: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self._model_cache = model_cache
        self._platform = platform
        self._repository = image.repository
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.security_group = ec2.SecurityGroup(
            self, "InstanceSecurityGroup", vpc=vpc, description="GPU worker instances", allow_all_outbound=True
        )
        model_cache.file_system.connections.allow_default_port_from(self.security_group)

        self.task_definition = ecs.Ec2TaskDefinition(self, "Task", network_mode=ecs.NetworkMode.BRIDGE)
        self.task_definition.add_volume(name="local-cache", host=ecs.Host(source_path=_HOST_CACHE_MOUNT))
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.container = self.task_definition.add_container(
            "worker",
            image=image.image,
            gpu_count=1,
            memory_reservation_mib=12 * 1024,
            stop_timeout=STOP_TIMEOUT,
            health_check=HEALTH_CHECK,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=self.log_group),
            environment={
                **environment,
                **model_cache.environment,
                **platform.environment,
                "COMFYSERVE_LOCAL_CACHE_DIR": LOCAL_CACHE_DIR,
                "COMFYSERVE_LOCAL_CACHE_BYTES": str(local_cache_bytes),
                "COMFYSERVE_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
                "POWERTOOLS_SERVICE_NAME": "comfyserve-worker",
                "POWERTOOLS_METRICS_NAMESPACE": "comfyserve",
                "LOG_LEVEL": "INFO",
            },
        )
        self.container.add_mount_points(
            ecs.MountPoint(container_path=_HOST_CACHE_MOUNT, source_volume="local-cache", read_only=False)
        )
        if capacity.hot_models:  # the NVMe cache links to these files: the same path inside the container
            self.task_definition.add_volume(name="hot-models", host=ecs.Host(source_path=HOT_DIR))
            self.container.add_mount_points(
                ecs.MountPoint(container_path=HOT_DIR, source_volume="hot-models", read_only=False)
            )
        self.groups: list[autoscaling.AutoScalingGroup] = []
        self.capacity_providers = [
            self._capacity_provider(family, vpc, subnets, capacity) for family in capacity.families
        ]
        model_cache.mount(self.task_definition, self.container, writer=True)
        model_cache.bucket.grant_read(self.task_definition.task_role)
        self.cluster.grant_task_protection(self.task_definition.task_role)
        acknowledge_bucket_grant(self.task_definition, model_cache.bucket, "a worker copies any model a job names")
        acknowledge(self.task_definition, ENV_REASON, "AwsSolutions-ECS2")
        acknowledge(self.task_definition, EXECUTION_ROLE_REASON, "AwsSolutions-IAM5[Resource::*]")
        stack = Stack.of(self)
        tasks = f"ecs:{stack.region}:{stack.account}:task/<{stack.get_logical_id(self.cluster.node.default_child)}>/*"  # type: ignore[arg-type]
        acknowledge(
            self.task_definition,
            "Task scale-in protection of this cluster's tasks: a worker protects itself while a job runs, and its"
            " task id is known only at run time",
            # The partition is literal or a reference depending on the app's feature flags.
            *(f"AwsSolutions-IAM5[Resource::arn:{partition}:{tasks}]" for partition in ("aws", "<AWS::Partition>")),
        )

        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            # No DesiredCount: the scaler owns the count, and a deploy leaves it as it is (a template value would
            # reset a running fleet on every deploy). CloudFormation creates the service with one task.
            min_healthy_percent=0,
            max_healthy_percent=100,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(capacity_provider=provider.capacity_provider_name, weight=1)
                for provider in self.capacity_providers
            ],
            placement_constraints=[ecs.PlacementConstraint.distinct_instances()],
            enable_ecs_managed_tags=True,
            propagate_tags=ecs.PropagatedTagSource.SERVICE,
        )
        # A strategy may only name providers already associated with the cluster: create the association first.
        self.service.node.add_dependency(self.cluster)
        # Container Insights' log group, so that it keeps the stack's retention.
        self.insights_logs = service_log_group(
            self,
            "InsightsLogs",
            name=f"/aws/ecs/containerinsights/{self.cluster.cluster_name}/performance",
            retention=log_retention,
            before=self.service,
        )

    def _capacity_provider(
        self, family: str, vpc: ec2.IVpc, subnets: ec2.SubnetSelection, capacity: WorkerCapacity
    ) -> ecs.AsgCapacityProvider:
        scope = Construct(self, family.upper())
        role = iam.Role(scope, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
        if self._repository is not None:
            self._repository.grant_pull(role)  # the worker's repository, no other
        if capacity.hot_models:  # a model may sit under a folder alias's key: the inventory says which
            self._model_cache.bucket.grant_read(role)
            acknowledge_bucket_grant(
                scope, self._model_cache.bucket, "the host stages the hot models the inventory names (read only)"
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": GPU_METRICS_NAMESPACE}},
            )
        )
        # Which group and lifecycle state this instance is in: no resource-level permissions.
        role.add_to_policy(iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingInstances"], resources=["*"]))
        if capacity.ssm_access:
            role.add_managed_policy(iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore"))
            acknowledge(
                scope,
                "Session Manager access to the GPU hosts (ssm_access, off by default): the AWS managed policy is"
                " what Systems Manager documents for its agent",
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
            )
        launch_template = ec2.LaunchTemplate(
            scope,
            "LaunchTemplate",
            machine_image=self._platform.machine_image(),
            instance_type=ec2.InstanceType(f"{family}.{capacity.instance_size}"),
            user_data=self._user_data(capacity),
            role=role,
            security_group=self.security_group,
            require_imdsv2=True,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        capacity.root_volume_gib,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        # gp3 allows 0.25 MiB/s per provisioned IOPS (3000 IOPS are included)
                        throughput=capacity.volume_throughput if capacity.volume_throughput > 125 else None,
                        iops=max(3000, capacity.volume_throughput * 4) if capacity.volume_throughput > 125 else None,
                    ),
                )
            ],
        )
        spot = (
            autoscaling.MixedInstancesPolicy(
                launch_template=launch_template,
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=0,
                    spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                ),
            )
            if capacity.spot
            else None
        )
        group = autoscaling.AutoScalingGroup(
            scope,
            "Group",
            vpc=vpc,
            vpc_subnets=subnets,
            min_capacity=0,  # and no desired capacity: ECS managed scaling (and the scaler) set it
            max_capacity=capacity.max_instances,
            new_instances_protected_from_scale_in=True,
            launch_template=None if spot else launch_template,
            mixed_instances_policy=spot,
            capacity_rebalance=True if spot else None,
            # A new launch template version (image or AMI changed) replaces the idle and pooled instances; an
            # instance running a job keeps its scale-in protection and leaves when the fleet scales in.
            update_policy=autoscaling.UpdatePolicy.instance_refresh(
                strategy=autoscaling.InstanceRefreshStrategy.ROLLING,
                min_healthy_percentage=0,
                max_healthy_percentage=100,
                skip_matching=True,
                scale_in_protected_instances=autoscaling.ScaleInProtectedInstances.IGNORE,
                standby_instances=autoscaling.StandbyInstances.IGNORE,
            ),
        )
        self.groups.append(group)
        hook = group.add_lifecycle_hook(
            "Prepare",
            lifecycle_hook_name=LIFECYCLE_HOOK,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_LAUNCHING,
            default_result=autoscaling.DefaultResult.ABANDON,
            heartbeat_timeout=PREPARE_TIMEOUT,
        )
        # Its own policy (not the role's default one, which the group's launch template depends on): the instance
        # completes the hook of its own group only.
        completes = iam.Policy(
            scope,
            "CompleteLifecycleAction",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["autoscaling:CompleteLifecycleAction"],
                    resources=[group_arn(self, group)],
                )
            ],
        )
        acknowledge_group_arn(completes, group, "An instance completes the lifecycle action of its own group only")
        if spot is not None:
            acknowledge(
                group,
                "The root volume is encrypted on the launch template (Encrypted: true); the rule cannot follow the"
                " template through a mixed instances policy",
                "AwsSolutions-EC26",
            )
        if spot is None and capacity.warm_pool_size:
            pool = group.add_warm_pool(
                min_size=capacity.warm_pool_size,
                max_group_prepared_capacity=capacity.warm_pool_size,
                pool_state=autoscaling.PoolState.STOPPED,
            )
            # Its first instance launches at once: the hook must hold it, and its role complete the action.
            pool.node.add_dependency(hook, completes)
        provider = ecs.AsgCapacityProvider(
            scope,
            "CapacityProvider",
            auto_scaling_group=group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            enable_managed_draining=True,
            target_capacity_percent=100,
            instance_warmup_period=60,
        )
        self.cluster.add_asg_capacity_provider(provider)
        acknowledge(
            scope,
            "ECS container instance role as ECS configures it: ecs:Submit* on this cluster, and the agent's"
            " discovery, telemetry, image token and log calls that have no resource-level permissions; the"
            " host's lifecycle look-up and its GPU metrics (PutMetricData, to its own namespace only) have none",
            "AwsSolutions-IAM5[Action::ecs:Submit*]",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge(
            scope,
            "Instances come and go with every scale from and to zero under ECS managed scaling; the ECS service"
            " events and Container Insights report them, e-mails per launch would be noise",
            "AwsSolutions-AS3",
        )
        return provider

    def _user_data(self, capacity: WorkerCapacity) -> ec2.UserData:
        """First boot (cloud-init, once per instance): the ECS agent's settings, the per-boot units, and the
        lifecycle action (preparing for the pool, or completing at once); the ECS agent starts after it."""
        stack = Stack.of(self)
        image = self.container.image_name
        config = {
            "region": stack.region,
            "hook_name": LIFECYCLE_HOOK,
            "image": image,
            "registry": Fn.select(0, Fn.split("/", image)) if self._repository is not None else None,
            "hot_dir": HOT_DIR,
            "hot_models": list(capacity.hot_models),
            "models_bucket": self._model_cache.bucket.bucket_name,
            "inventory_key": INVENTORY_KEY,
            "owner_uid": WORKER_UID,
            "cloudwatch_agent_config": _AGENT_CONFIG_PATH,
        }
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "cat >> /etc/ecs/ecs.config <<'EOF'",
            "ECS_ENABLE_GPU_SUPPORT=true",
            "ECS_WARM_POOLS_CHECK=true",
            "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",
            "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
            "ECS_CONTAINER_STOP_TIMEOUT=120s",
            "EOF",
            *_write_file("/usr/local/bin/comfyserve-nvme", _NVME_SCRIPT, mode="755"),
            *_write_file("/etc/systemd/system/comfyserve-nvme.service", _NVME_UNIT),
            "mkdir -p /etc/comfyserve",
            *_write_file("/etc/comfyserve/prepare.json", json.dumps(config, indent=1)),
            *_write_file(_AGENT_CONFIG_PATH, json.dumps(_AGENT_CONFIG, indent=1)),
            *_write_file("/usr/local/bin/comfyserve-prepare", PREPARE_SCRIPT.read_text(encoding="utf-8"), mode="755"),
            *_write_file("/etc/systemd/system/comfyserve-prepare.service", _PREPARE_UNIT),
            "mkdir -p /etc/systemd/system/ecs.service.d",
            *_write_file("/etc/systemd/system/ecs.service.d/comfyserve.conf", _ECS_AFTER),
            "systemctl daemon-reload",
            "systemctl enable --now comfyserve-nvme.service",
            "systemctl enable comfyserve-prepare.service",
            "systemctl start docker",
            "/usr/bin/python3 /usr/local/bin/comfyserve-prepare",
        )
        return user_data

    @property
    def service_environment(self) -> dict[str, str]:
        """The variables of the scaler's target (``ScalerTarget``)."""
        return {
            "COMFYSERVE_ECS_CLUSTER": self.cluster.cluster_name,
            "COMFYSERVE_ECS_SERVICE": self.service.service_name,
        }


def _write_file(path: str, text: str, *, mode: str | None = None) -> list[str]:
    """Shell lines that write ``text`` to ``path`` (a quoted here-document: nothing in it is expanded)."""
    if "EOF" in text.splitlines():
        raise ValueError(f"{path}: a line of the text ends the here-document")
    return [f"cat > {path} <<'EOF'", *text.strip().splitlines(), "EOF", *([f"chmod {mode} {path}"] if mode else [])]
