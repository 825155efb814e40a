"""The GPU workers: an ECS cluster on EC2 GPU capacity (one Auto Scaling group and capacity provider per
instance family, from zero), and the worker service whose desired count the scaler sets.

A scale-out starts a stopped instance from the warm pool when there is one: the worker image is already on
its EBS volume (ECS_IMAGE_PULL_BEHAVIOR=prefer-cached), so no multi-GB pull. The instance store (NVMe) is
formatted and mounted on every boot (a stopped instance loses it) and holds the worker's local model cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.model_cache import WORKER_UID, ModelCache
from infra.nag import ENV_REASON, EXECUTION_ROLE_REASON, acknowledge, acknowledge_bucket_grant

LOCAL_CACHE_DIR = "/var/cache/comfyserve/models"
_HOST_CACHE_MOUNT = "/var/cache/comfyserve"
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
chown {WORKER_UID}:{WORKER_UID} {LOCAL_CACHE_DIR}
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


@dataclass(frozen=True, kw_only=True)
class WorkerCapacity:
    """The GPU capacity: families, size, Spot, and warm instances per family."""

    families: tuple[str, ...]
    instance_size: str
    spot: bool
    warm_pool_size: int
    max_instances: int
    root_volume_gib: int


class Workers(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        capacity: WorkerCapacity,
        image: ecs.ContainerImage,
        environment: dict[str, str],
        model_cache: ModelCache,
        local_cache_bytes: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
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
        self.capacity_providers = [
            self._capacity_provider(family, vpc, subnets, capacity) for family in capacity.families
        ]

        self.task_definition = ecs.Ec2TaskDefinition(self, "Task", network_mode=ecs.NetworkMode.BRIDGE)
        self.task_definition.add_volume(name="local-cache", host=ecs.Host(source_path=_HOST_CACHE_MOUNT))
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.container = self.task_definition.add_container(
            "worker",
            image=image,
            gpu_count=1,
            memory_reservation_mib=12 * 1024,
            stop_timeout=STOP_TIMEOUT,
            health_check=HEALTH_CHECK,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=self.log_group),
            environment={
                **environment,
                **model_cache.environment,
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
            # The scaler owns the count; a deploy resets it to zero and the scaler restores it within a minute
            # (tasks with a job in hand hold scale-in protection).
            desired_count=0,
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

    def _capacity_provider(
        self, family: str, vpc: ec2.IVpc, subnets: ec2.SubnetSelection, capacity: WorkerCapacity
    ) -> ecs.AsgCapacityProvider:
        scope = Construct(self, family.upper())
        role = iam.Role(scope, "InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "cat >> /etc/ecs/ecs.config <<'EOF'",
            "ECS_ENABLE_GPU_SUPPORT=true",
            "ECS_WARM_POOLS_CHECK=true",
            "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached",
            "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true",
            "ECS_CONTAINER_STOP_TIMEOUT=120s",
            "EOF",
            "cat > /usr/local/bin/comfyserve-nvme <<'EOF'",
            *_NVME_SCRIPT.strip().splitlines(),
            "EOF",
            "chmod 755 /usr/local/bin/comfyserve-nvme",
            "cat > /etc/systemd/system/comfyserve-nvme.service <<'EOF'",
            *_NVME_UNIT.strip().splitlines(),
            "EOF",
            "systemctl daemon-reload",
            "systemctl enable --now comfyserve-nvme.service",
        )
        instance_type = ec2.InstanceType(f"{family}.{capacity.instance_size}")
        launch_template = ec2.LaunchTemplate(
            scope,
            "LaunchTemplate",
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(ecs.AmiHardwareType.GPU, cached_in_context=True),
            instance_type=instance_type,
            user_data=user_data,
            role=role,
            security_group=self.security_group,
            require_imdsv2=True,
            http_tokens=ec2.LaunchTemplateHttpTokens.REQUIRED,
            http_put_response_hop_limit=1,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        capacity.root_volume_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
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
            min_capacity=0,  # and no desired capacity: ECS managed scaling sets it
            max_capacity=capacity.max_instances,
            new_instances_protected_from_scale_in=True,
            launch_template=None if spot else launch_template,
            mixed_instances_policy=spot,
            capacity_rebalance=True if spot else None,
        )
        if spot is not None:
            acknowledge(
                group,
                "The root volume is encrypted on the launch template (Encrypted: true); the rule cannot follow the"
                " template through a mixed instances policy",
                "AwsSolutions-EC26",
            )
        if spot is None and capacity.warm_pool_size:
            group.add_warm_pool(
                min_size=capacity.warm_pool_size,
                max_group_prepared_capacity=capacity.warm_pool_size,
                pool_state=autoscaling.PoolState.STOPPED,
            )
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
            " discovery, telemetry, image token and log calls that have no resource-level permissions",
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

    @property
    def service_environment(self) -> dict[str, str]:
        """The variables of the scaler's target (``ScalerTarget``)."""
        return {
            "COMFYSERVE_ECS_CLUSTER": self.cluster.cluster_name,
            "COMFYSERVE_ECS_SERVICE": self.service.service_name,
        }
