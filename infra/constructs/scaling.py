"""Scaling from and to zero: the ``scaler`` function sets the worker service's desired count from the queue's
backlog every minute and whenever a job is queued (target tracking cannot start from zero on one message)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.adapters.aws.eventbridge import DETAIL_TYPES, EVENT_SOURCE
from comfyserve.contracts.events import JobEventType
from comfyserve.service.autoscale import STATE_KEY
from infra.constructs.functions import ServiceFunction
from infra.constructs.workers import Workers
from infra.nag import acknowledge_bucket_grant

SCHEDULE = Duration.minutes(1)


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
        seconds_per_job: float,
        max_workers: int,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.scaler = ServiceFunction(
            self,
            "Scaler",
            handler="scaler",
            code=code,
            environment={
                **environment,
                **workers.service_environment,
                "COMFYSERVE_SECONDS_PER_JOB": str(seconds_per_job),
                "COMFYSERVE_MAX_WORKERS": str(max_workers),
            },
            log_retention=log_retention,
            description="Sets the GPU worker service's desired count from the queue backlog",
            memory_mib=256,
        )
        function = self.scaler.function
        queue.grant(function, "sqs:GetQueueAttributes")
        state_bucket.grant_read_write(function, STATE_KEY)
        acknowledge_bucket_grant(self.scaler, state_bucket, f"the scaler's own state object {STATE_KEY}", STATE_KEY)
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["ecs:DescribeServices", "ecs:UpdateService"], resources=[workers.service.service_arn]
            )
        )
        target = targets.LambdaFunction(function, retry_attempts=0)
        self.schedule = events.Rule(
            self,
            "EveryMinute",
            description="Run the scaler every minute",
            schedule=events.Schedule.rate(SCHEDULE),
            targets=[target],
        )
        self.on_enqueue = events.Rule(
            self,
            "OnJobQueued",
            description="Run the scaler as soon as a job is queued (a start from zero waits for no metric)",
            event_bus=bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE], detail_type=[DETAIL_TYPES[JobEventType.JOB_QUEUED]]
            ),
            targets=[target],
        )
