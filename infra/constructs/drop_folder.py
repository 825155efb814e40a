"""The drop folder: a request JSON (or a bare workflow) dropped under ``inbox/{tenant}/`` becomes a job through
the ``drop_folder`` function (the API's submit path; the object's key and version are its idempotency key);
the results of those jobs are copied to ``outbox/{tenant}/{name}/``. The inbox rule matches ``inbox/`` only,
so nothing written to the outbox comes back in."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.adapters.aws.eventbridge import DETAIL_TYPES, EVENT_SOURCE
from comfyserve.contracts.events import JobEventType
from comfyserve.service.outbox import DROP_META_KEY
from infra.constructs.buckets import secure_bucket
from infra.constructs.functions import ServiceFunction
from infra.nag import acknowledge_bucket_grant

INBOX_PREFIX = "inbox/"
TERMINAL = (JobEventType.JOB_SUCCEEDED, JobEventType.JOB_FAILED, JobEventType.JOB_CANCELLED)


class DropFolder(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: dict[str, str],
        bus: events.IEventBus,
        access_logs: s3.IBucket,
        retention: Duration,
        tenants: str | None,
        failures: sqs.IQueue,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = secure_bucket(self, "Inbox", access_logs=access_logs, event_bridge=True, expire_after=retention)
        self.handler = ServiceFunction(
            self,
            "Handler",
            handler="drop_folder",
            code=code,
            environment={
                **environment,
                "COMFYSERVE_INBOX_BUCKET": self.bucket.bucket_name,
                **({"COMFYSERVE_DROP_TENANTS": tenants} if tenants else {}),
            },
            log_retention=log_retention,
            description="Submits jobs dropped in the inbox and copies their results to the outbox",
            memory_mib=1024,
            timeout=Duration.minutes(2),
            failures=failures,
        )
        self.bucket.grant_read(self.handler.function, f"{INBOX_PREFIX}*")
        self.bucket.grant_put(self.handler.function, "outbox/*")
        acknowledge_bucket_grant(
            self.handler, self.bucket, "reads what tenants drop, writes their results", "inbox/*", "outbox/*"
        )
        self.inbox_rule = events.Rule(
            self,
            "Dropped",
            description="An object was dropped under inbox/ (never the outbox)",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [self.bucket.bucket_name]},
                    "object": {"key": [{"prefix": INBOX_PREFIX}]},
                },
            ),
            targets=[self.handler.rule_target(retry_attempts=20)],
        )
        self.results_rule = events.Rule(
            self,
            "DroppedJobEnded",
            description="A job submitted through the drop folder ended: copy its results to the outbox",
            event_bus=bus,
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=[DETAIL_TYPES[event] for event in TERMINAL],
                detail={"metadata": {DROP_META_KEY: {"key": [{"exists": True}]}}},
            ),
            targets=[self.handler.rule_target(retry_attempts=20)],
        )
