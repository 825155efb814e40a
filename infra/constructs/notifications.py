"""Completion and job events: the results bucket reports a manifest.json to EventBridge, the ``completion``
function records the terminal state and publishes on the ``comfyserve`` bus (archived); the ``webhooks``
function delivers the events of jobs that carry a webhook, signed with Standard Webhooks."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from comfyserve.adapters.aws.eventbridge import DETAIL_TYPES, EVENT_SOURCE
from comfyserve.contracts.events import JobEventType
from infra import access
from infra.constructs.buckets import secure_bucket
from infra.constructs.functions import ServiceFunction
from infra.constructs.pipeline import Pipeline
from infra.nag import acknowledge, acknowledge_bucket_grant, acknowledge_table_grant

MANIFEST_KEYS = "outputs/*/manifest.json"


class Notifications(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        pipeline: Pipeline,
        bus_name: str,
        retention: Duration,
        access_logs: s3.IBucket,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        # Only what one job leaves behind ages out: never the catalog, the scaler's state or a tenant's uploads.
        self.bucket = secure_bucket(
            self,
            "Results",
            access_logs=access_logs,
            event_bridge=True,
            expire_after=retention,
            expire_prefixes=access.JOB_PREFIXES,
        )
        self.bus = events.EventBus(self, "Bus", event_bus_name=bus_name)
        self.archive = self.bus.archive(
            "Archive",
            description="Every job event, for replay to new subscribers",
            event_pattern=events.EventPattern(source=[EVENT_SOURCE]),
            retention=retention,
        )
        environment = {
            **pipeline.resource_environment,
            "COMFYSERVE_BUCKET": self.bucket.bucket_name,
            "COMFYSERVE_EVENT_BUS": self.bus.event_bus_name,
        }
        self.completion = ServiceFunction(
            self,
            "Completion",
            handler="completion",
            code=code,
            environment=environment,
            log_retention=log_retention,
            description="Records a job's terminal state from its manifest.json and publishes the job event",
            failures=pipeline.failed_events,
        )
        access.COMPLETION.grant(self.bucket, self.completion.function)
        access.grant_table(pipeline.table, self.completion.function, access.RECORD_TABLE_ACTIONS)
        self.bus.grant_put_events_to(self.completion.function)
        acknowledge_bucket_grant(
            self.completion, self.bucket, "reads the manifest and the outputs it names", *access.COMPLETION.patterns
        )
        acknowledge_table_grant(self.completion, pipeline.table)
        # The worker writes outputs/{tenant}/{job_id}/manifest.json last: its creation completes the job.
        self.manifest_rule = events.Rule(
            self,
            "ManifestCreated",
            description="A job's manifest.json was written: complete the job",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [self.bucket.bucket_name]},
                    "object": {"key": [{"wildcard": MANIFEST_KEYS}]},
                },
            ),
            targets=[self.completion.rule_target(retry_attempts=20)],
        )

        self.webhook_secret = secretsmanager.Secret(
            self,
            "WebhookSecret",
            description="Standard Webhooks signing secret of job webhooks",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=48),
        )
        self.webhooks = ServiceFunction(
            self,
            "Webhooks",
            handler="webhooks",
            code=code,
            environment={"COMFYSERVE_WEBHOOK_SECRET_ARN": self.webhook_secret.secret_arn},
            log_retention=log_retention,
            description="POSTs job events to the job's webhook with Standard Webhooks signatures",
            timeout=Duration.minutes(2),
            failures=pipeline.failed_events,
        )
        self.webhook_secret.grant_read(self.webhooks.function)
        acknowledge(
            self.webhook_secret,
            "Subscribers verify signatures with this secret: rotating it is a coordinated change with them"
            " (docs/DEPLOY.md), not a schedule",
            "AwsSolutions-SMG4",
        )
        self.webhook_rule = events.Rule(
            self,
            "JobWebhooks",
            description="Events of jobs that carry a webhook (progress events are not POSTed)",
            event_bus=self.bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=events.Match.anything_but(DETAIL_TYPES[JobEventType.JOB_PROGRESS]),
                detail={"webhook": {"url": [{"exists": True}]}},
            ),
            targets=[self.webhooks.rule_target(retry_attempts=2)],
        )
