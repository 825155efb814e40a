"""Models: the S3 models bucket is the source of truth (with its published inventory, which the API validates
against); EFS (elastic throughput) is the shared root every worker mounts through one access point; the
``models sync`` task definition (Fargate, no GPU) publishes the inventory and copies models onto EFS."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_efs as efs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.buckets import secure_bucket
from infra.nag import ENV_REASON, EXECUTION_ROLE_REASON, acknowledge, acknowledge_bucket_grant

MODEL_ROOT = "/mnt/models"
INVENTORY_KEY = "inventory.json"
# The worker image runs as this user (gpu_container/Dockerfile); EFS creates the root with it as owner.
WORKER_UID = "10001"
VOLUME_NAME = "models"


class ModelCache(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self._vpc = vpc
        self.bucket = secure_bucket(self, "Models", access_logs=access_logs)
        self.file_system = efs.FileSystem(
            self,
            "Root",
            vpc=vpc,
            vpc_subnets=subnets,
            encrypted=True,
            throughput_mode=efs.ThroughputMode.ELASTIC,
            performance_mode=efs.PerformanceMode.GENERAL_PURPOSE,
            removal_policy=RemovalPolicy.RETAIN,
            enable_automatic_backups=True,
        )
        self.access_point = self.file_system.add_access_point(
            "WorkerRoot",
            path="/comfyserve/models",
            posix_user=efs.PosixUser(uid=WORKER_UID, gid=WORKER_UID),
            create_acl=efs.Acl(owner_uid=WORKER_UID, owner_gid=WORKER_UID, permissions="755"),
        )
        self.volume = ecs.Volume(
            name=VOLUME_NAME,
            efs_volume_configuration=ecs.EfsVolumeConfiguration(
                file_system_id=self.file_system.file_system_id,
                transit_encryption="ENABLED",
                authorization_config=ecs.AuthorizationConfig(
                    access_point_id=self.access_point.access_point_id, iam="ENABLED"
                ),
            ),
        )

    @property
    def environment(self) -> dict[str, str]:
        return {
            "COMFYSERVE_MODELS_BUCKET": self.bucket.bucket_name,
            "COMFYSERVE_INVENTORY_KEY": INVENTORY_KEY,
            "COMFYSERVE_MODEL_ROOT": MODEL_ROOT,
        }

    def mount(self, task_definition: ecs.TaskDefinition, container: ecs.ContainerDefinition, *, writer: bool) -> None:
        """The EFS root on ``container`` at MODEL_ROOT; IAM decides who may mount (and who may write)."""
        task_definition.add_volume(name=self.volume.name, efs_volume_configuration=self.volume.efs_volume_configuration)
        container.add_mount_points(
            ecs.MountPoint(container_path=MODEL_ROOT, source_volume=VOLUME_NAME, read_only=not writer)
        )
        actions = ["elasticfilesystem:ClientMount", *(["elasticfilesystem:ClientWrite"] if writer else [])]
        task_definition.task_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=actions,
                resources=[self.file_system.file_system_arn],
                conditions={"StringEquals": {"elasticfilesystem:AccessPointArn": self.access_point.access_point_arn}},
            )
        )

    def add_sync_task(
        self, *, image: ecs.ContainerImage, log_retention: logs.RetentionDays
    ) -> ecs.FargateTaskDefinition:
        """``comfyserve models sync --warm`` as a Fargate task a user runs (docs/DEPLOY.md shows the command)."""
        task = ecs.FargateTaskDefinition(
            self,
            "SyncTask",
            cpu=2048,
            memory_limit_mib=8192,
            ephemeral_storage_gib=100,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64, operating_system_family=ecs.OperatingSystemFamily.LINUX
            ),
        )
        log_group = logs.LogGroup(self, "SyncLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        container = task.add_container(
            "sync",
            image=image,
            entry_point=["comfyserve"],
            command=["models", "sync", "--warm"],
            environment=self.environment,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="sync", log_group=log_group),
        )
        self.mount(task, container, writer=True)
        self.bucket.grant_read(task.task_role)
        self.bucket.grant_put(task.task_role, INVENTORY_KEY)
        acknowledge_bucket_grant(task, self.bucket, "the sync lists and reads every model and writes the inventory")
        acknowledge(task, ENV_REASON, "AwsSolutions-ECS2")
        acknowledge(task, EXECUTION_ROLE_REASON, "AwsSolutions-IAM5[Resource::*]")
        self.sync_task = task
        self.sync_security_group = ec2.SecurityGroup(
            self, "SyncSecurityGroup", vpc=self._vpc, description="models sync task", allow_all_outbound=True
        )
        self.file_system.connections.allow_default_port_from(self.sync_security_group)
        return task
