"""Scaling from and to zero: the ``scaler`` function sets the worker service's desired count from the queue's
backlog every minute and when jobs are queued (target tracking cannot start from zero on one message), and,
given the GPU group (one instance family), that group's desired capacity too (``COMFYSERVE_ASG_NAME``) so a start
from zero does not wait for ECS managed scaling's alarm; a ComfyUI fleet's scaler also keeps one worker until the
fleet's catalog is published."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.adapters.aws.eventbridge import DETAIL_TYPES, EVENT_SOURCE
from comfyserve.contracts.events import JobEventType
from comfyserve.service.autoscale import STATE_KEY
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY
from infra.constructs.functions import ServiceFunction
from infra.constructs.queues import secure_queue
from infra.constructs.workers import Workers
from infra.nag import acknowledge, acknowledge_bucket_grant, acknowledge_group_arn, group_arn

SCHEDULE = Duration.minutes(1)
NUDGE_RETENTION = Duration.minutes(5)
NUDGE_CONCURRENCY = 2  # the least an SQS event source allows


class Scaling(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        workers: Workers,
        queue: sqs.IQueue,
        state_bucket: s3.IBucket,
        bus: events.IEventBus,
        environment: dict[str, str],
        backend: str,
        seconds_per_job: float,
        max_workers: int,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        group: autoscaling.IAutoScalingGroup | None = None,
    ) -> None:
        """``group``: the GPU Auto Scaling group the scaler sizes itself (direct capacity), if any."""
        super().__init__(scope, construct_id)
        self.scaler = ServiceFunction(
            self,
            "Scaler",
            handler="scaler",
            code=code,
            environment={
                **environment,
                **workers.service_environment,
                "COMFYSERVE_BACKEND": backend,
                "COMFYSERVE_SECONDS_PER_JOB": str(seconds_per_job),
                "COMFYSERVE_MAX_WORKERS": str(max_workers),
                **({"COMFYSERVE_ASG_NAME": group.auto_scaling_group_name} if group is not None else {}),
            },
            log_retention=log_retention,
            description="Sets the GPU worker service's desired count from the queue backlog",
            memory_mib=256,
        )
        function = self.scaler.function
        queue.grant(function, "sqs:GetQueueAttributes")
        state_bucket.grant_read(function, STATE_KEY)
        state_bucket.grant_put(function, STATE_KEY)  # overwritten in place, never deleted
        state_bucket.grant_read(function, DEFAULT_CATALOG_KEY)  # a comfyui fleet's scaler looks for the catalog
        acknowledge_bucket_grant(
            self.scaler,
            state_bucket,
            f"the scaler's own state object {STATE_KEY}, and reads the published catalog {DEFAULT_CATALOG_KEY}",
            STATE_KEY,
            DEFAULT_CATALOG_KEY,
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:DescribeServices", "ecs:UpdateService"], resources=[workers.service.service_arn]
            )
        )
        if group is not None:
            self._size(group)
        self.schedule = events.Rule(
            self,
            "EveryMinute",
            description="Run the scaler every minute",
            schedule=events.Schedule.rate(SCHEDULE),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
        # Job Queued events reach the scaler through a queue read in batches by at most NUDGE_CONCURRENCY
        # invocations: a burst of 500 submissions makes a few scaler runs, not 500 concurrent ones competing with
        # the API for the account's Lambda concurrency. A nudge older than NUDGE_RETENTION is moot (the schedule).
        self.nudges = secure_queue(
            self, "Nudges", retention_period=NUDGE_RETENTION, visibility_timeout=Duration.seconds(60)
        )
        acknowledge(
            self.nudges,
            "A nudge is only a hint to run the scaler now; one that fails expires in minutes and the every-minute"
            " schedule runs the scaler anyway, so there is nothing to keep in a dead-letter queue",
            "AwsSolutions-SQS3",
        )
        self.on_enqueue = events.Rule(
            self,
            "OnJobQueued",
            description="Nudge the scaler as soon as a job is queued (a start from zero waits for no metric)",
            event_bus=bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE], detail_type=[DETAIL_TYPES[JobEventType.JOB_QUEUED]]
            ),
            targets=[targets.SqsQueue(self.nudges)],
        )
        function.add_event_source(
            sources.SqsEventSource(
                self.nudges,
                batch_size=100,
                max_batching_window=Duration.seconds(1),
                max_concurrency=NUDGE_CONCURRENCY,
            )
        )

    def _size(self, group: autoscaling.IAutoScalingGroup) -> None:
        """SetDesiredCapacity on ``group`` only; DescribeAutoScalingGroups has no resource-level permissions."""
        arn = group_arn(self, group)
        function = self.scaler.function
        function.add_to_role_policy(iam.PolicyStatement(actions=["autoscaling:SetDesiredCapacity"], resources=[arn]))
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["autoscaling:DescribeAutoScalingGroups"], resources=["*"])
        )
        acknowledge(
            self.scaler,
            "DescribeAutoScalingGroups and X-Ray tracing have no resource-level permissions",
            "AwsSolutions-IAM5[Resource::*]",
        )
        acknowledge_group_arn(self.scaler, group, "The scaler sizes the one GPU group it names")
