"""The comfyserve stack: composes one construct per concern, wires the settings contract (the environment
every component reads, ``comfyserve.settings``) and the grants between them, and adds the cdk-nag checks'
acknowledgements with their reasons."""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import CfnOutput, Duration, Environment, IgnoreMode, RemovalPolicy, Stack, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from comfyserve.settings import CloudWorkerSettings
from infra import access
from infra.checkov import acknowledge_checkov
from infra.constructs.api import Api, UsageLimits
from infra.constructs.drop_folder import DropFolder
from infra.constructs.functions import lambda_code
from infra.constructs.model_cache import ModelCache
from infra.constructs.network import Network
from infra.constructs.notifications import Notifications
from infra.constructs.observability import Observability
from infra.constructs.pipeline import Pipeline
from infra.constructs.reconciler import Reconciler
from infra.constructs.scaling import Scaling
from infra.constructs.workers import WorkerCapacity, WorkerImage, Workers
from infra.gpu_platform import GpuPlatform
from infra.log_groups import give_log_groups, log_retention
from infra.nag import acknowledge, acknowledge_bucket_grant, acknowledge_table_grant
from infra.settings import StackSettings

ROOT = Path(__file__).resolve().parents[1]
# The worker's heartbeat extends a claimed message by this much at a time (COMFYSERVE_VISIBILITY_TIMEOUT_S).
VISIBILITY_TIMEOUT = Duration.seconds(CloudWorkerSettings.model_fields["visibility_timeout_s"].default)
# Only these reach the image build context (gpu_container/Dockerfile builds from the repository root).
IMAGE_CONTEXT = ["*", "!pyproject.toml", "!README.md", "!comfyserve", "!gpu_container", "**/__pycache__"]
# A private ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag | @sha256:digest].
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<name>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[\w][\w.-]*)|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def worker_image(scope: Construct, *, backend: str, uri: str | None) -> WorkerImage:
    """The worker image: ``uri`` when given (an ECR repository through the repository, so the task execution role
    and the hosts are granted the pull; any other registry by URI), else gpu_container/ built for ``backend`` (its
    ``comfyui`` target, or the default builtin-only one) into the bootstrap repository (immutable tags)."""
    if uri:
        ecr_uri = _ECR_URI.match(uri)
        if ecr_uri is None:
            return WorkerImage(ecs.ContainerImage.from_registry(uri))
        arn = Stack.of(scope).format_arn(
            service="ecr",
            account=ecr_uri["account"],
            region=ecr_uri["region"],
            resource="repository",
            resource_name=ecr_uri["name"],
        )
        repository = ecr.Repository.from_repository_attributes(
            scope, "WorkerRepository", repository_arn=arn, repository_name=ecr_uri["name"]
        )
        tag = ecr_uri["digest"] or ecr_uri["tag"] or "latest"
        return WorkerImage(ecs.ContainerImage.from_ecr_repository(repository, tag), repository)
    asset = ecr_assets.DockerImageAsset(
        scope,
        "WorkerImage",
        directory=str(ROOT),
        file="gpu_container/Dockerfile",
        target="comfyui" if backend == "comfyui" else None,
        exclude=IMAGE_CONTEXT,
        ignore_mode=IgnoreMode.DOCKER,
        platform=ecr_assets.Platform.LINUX_AMD64,  # the GPU instances, whatever machine builds it
    )
    return WorkerImage(ecs.ContainerImage.from_docker_image_asset(asset), asset.repository)


class ComfyServeStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        env: Environment | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id, env=env, description=description)
        Tags.of(self).add("project", "comfyserve")
        retention = Duration.days(settings.retention_days)
        log_days = log_retention(settings.retention_days)
        code = lambda_code()

        vpc = ec2.Vpc.from_lookup(self, "ExistingVpc", vpc_id=settings.vpc_id) if settings.vpc_id is not None else None
        network = Network(
            self,
            "Network",
            vpc=vpc,
            max_azs=settings.max_azs,
            open_egress=settings.open_egress,
            flow_log_retention=log_days,
            ssm_access=settings.ssm_access,
        )
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(max(90, settings.retention_days)))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        models = ModelCache(
            self, "ModelCache", vpc=network.vpc, subnets=network.worker_subnets, access_logs=access_logs
        )
        pipeline = Pipeline(
            self,
            "Pipeline",
            visibility_timeout=VISIBILITY_TIMEOUT,
            max_receive_count=settings.max_receive_count,
            code=code,
            log_retention=log_days,
            record_retention_days=settings.retention_days,
        )
        notifications = Notifications(
            self,
            "Notifications",
            pipeline=pipeline,
            bus_name=settings.stack_name,
            retention=retention,
            access_logs=access_logs,
            code=code,
            log_retention=log_days,
        )
        bucket, table, bus = notifications.bucket, pipeline.table, notifications.bus
        # AwsResourceNames: what every Lambda and the worker talk to.
        environment = {
            **pipeline.resource_environment,
            "COMFYSERVE_BUCKET": bucket.bucket_name,
            "COMFYSERVE_EVENT_BUS": bus.event_bus_name,
            "COMFYSERVE_MODELS_BUCKET": models.bucket.bucket_name,
        }
        dead_letter = pipeline.dead_letter.function
        for name, value in environment.items():
            dead_letter.add_environment(name, value)
        access.grant_table(table, dead_letter, access.RECORD_TABLE_ACTIONS)
        access.DEAD_LETTER.grant(bucket, dead_letter)
        bus.grant_put_events_to(dead_letter)
        acknowledge_bucket_grant(
            pipeline.dead_letter,
            bucket,
            "reads a dead job's outputs, writes its failure manifest",
            *access.DEAD_LETTER.patterns,
        )
        acknowledge_table_grant(pipeline.dead_letter, table)

        reconciler = Reconciler(
            self,
            "Reconciler",
            table=table,
            queue=pipeline.queue,
            bus=bus,
            environment=environment,
            code=code,
            log_retention=log_days,
        )

        image = worker_image(self, backend=settings.backend, uri=settings.worker_image)
        platform = GpuPlatform.of_image()  # the AMI family that runs the image's CUDA (one-line error if none)
        workers = Workers(
            self,
            "Workers",
            vpc=network.vpc,
            subnets=network.worker_subnets,
            capacity=WorkerCapacity(
                families=settings.instance_families,
                instance_size=settings.instance_size,
                spot=settings.spot,
                warm_pool_size=settings.warm_pool,
                max_instances=settings.max_workers,
                root_volume_gib=settings.root_volume_gib,
                volume_throughput=settings.volume_throughput,
                hot_models=settings.hot_models,
                ssm_access=settings.ssm_access,
            ),
            image=image,
            platform=platform,
            environment={
                **environment,
                "COMFYSERVE_BACKEND": settings.backend,
                "COMFYSERVE_JOB_TIMEOUT_S": str(settings.job_timeout_s),
                "COMFYSERVE_VISIBILITY_TIMEOUT_S": str(int(VISIBILITY_TIMEOUT.to_seconds())),
            },
            model_cache=models,
            local_cache_bytes=settings.local_cache_gib * 1024**3,
            log_retention=log_days,
        )
        network.allow_endpoints_from(workers.security_group)
        worker_role = workers.task_definition.task_role
        access.WORKER.grant(bucket, worker_role)
        access.grant_table(table, worker_role, access.RECORD_TABLE_ACTIONS)
        pipeline.queue.grant_consume_messages(worker_role)
        bus.grant_put_events_to(worker_role)
        acknowledge_bucket_grant(
            workers.task_definition,
            bucket,
            "a worker reads the inputs and writes the outputs of any job, and publishes the catalog it serves",
            *access.WORKER.patterns,
        )
        acknowledge_table_grant(workers.task_definition, table)
        models.add_sync_task(image=image.image, log_retention=log_days)
        network.allow_endpoints_from(models.sync_security_group)

        scaling = Scaling(
            self,
            "Scaling",
            workers=workers,
            queue=pipeline.queue,
            state_bucket=bucket,
            bus=bus,
            environment=environment,
            backend=settings.backend,
            seconds_per_job=settings.seconds_per_job,
            max_workers=settings.max_workers,
            code=code,
            log_retention=log_days,
            group=workers.groups[0] if settings.sizes_group else None,
        )
        api = Api(
            self,
            "Api",
            environment={**environment, "COMFYSERVE_BACKEND": settings.backend},  # a comfyui fleet's start-up
            limits=UsageLimits(
                rate_limit=settings.api_rate_limit,
                burst_limit=settings.api_burst_limit,
                quota_per_day=settings.api_quota_per_day,
            ),
            code=code,
            log_retention=log_days,
            cloud_watch_role=settings.api_cloudwatch_role,
        )
        drop_folder = DropFolder(
            self,
            "DropFolder",
            environment={**environment, "COMFYSERVE_BACKEND": settings.backend},
            bus=bus,
            access_logs=access_logs,
            retention=retention,
            tenants=settings.drop_tenants,
            failures=pipeline.failed_events,
            code=code,
            log_retention=log_days,
        )
        for submitter, objects in ((api.handler, access.API), (drop_folder.handler, access.DROP_FOLDER)):
            objects.grant(bucket, submitter.function)
            access.grant_table(table, submitter.function, access.SUBMIT_TABLE_ACTIONS)
            pipeline.queue.grant_send_messages(submitter.function)
            bus.grant_put_events_to(submitter.function)
            models.bucket.grant_read(submitter.function, models.environment["COMFYSERVE_INVENTORY_KEY"])
            acknowledge_bucket_grant(
                submitter,
                bucket,
                "the submit path stores a job's workflow and inputs and serves its outputs",
                *objects.patterns,
            )
            acknowledge_bucket_grant(submitter, models.bucket, "reads the published inventory only")
            acknowledge_table_grant(submitter, table)
        for child in self.node.children:
            if child.node.id.startswith("BucketNotificationsHandler"):
                acknowledge(
                    child,
                    "CDK's own handler that turns on the buckets' EventBridge notifications at deploy time",
                    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                    "AwsSolutions-IAM5[Resource::*]",
                )

        functions = [
            api.handler.function,
            notifications.completion.function,
            notifications.webhooks.function,
            dead_letter,
            scaling.scaler.function,
            drop_folder.handler.function,
            reconciler.handler.function,
        ]
        give_log_groups(self, log_days)  # CDK's own custom-resource handlers
        Observability(
            self,
            "Observability",
            queue=pipeline.queue,
            dead_letter_queue=pipeline.dead_letter_queue,
            failed_events=pipeline.failed_events,
            service=workers.service,
            functions=functions,
            worker_logs=workers.log_group,
            alarm_email=settings.alarm_email,
        )

        outputs = {
            "ApiUrl": api.rest_api.url,
            "UsagePlanId": api.usage_plan.usage_plan_id,
            "RestApiId": api.rest_api.rest_api_id,
            "JobsBucket": bucket.bucket_name,
            "InboxBucket": drop_folder.bucket.bucket_name,
            "ModelsBucket": models.bucket.bucket_name,
            "EventBus": bus.event_bus_name,
            "Cluster": workers.cluster.cluster_name,
            "WorkerService": workers.service.service_name,
            "ModelsSyncTask": models.sync_task.task_definition_arn,
            "ModelsSyncSubnets": ",".join(network.worker_subnet_ids),
            "ModelsSyncSecurityGroup": models.sync_security_group.security_group_id,
            "WebhookSecretArn": notifications.webhook_secret.secret_arn,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        acknowledge_checkov(self)
