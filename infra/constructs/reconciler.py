"""The reconciler: a scheduled function that finishes the dispatch of jobs whose submit died between writing
the record and sending the message (or whose ``Job Queued`` the bus refused), read from the table's sparse
``by_dispatch`` index (added here: it serves this function alone)."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.adapters.aws.dynamodb import DISPATCH_ATTR, DISPATCH_INDEX, ORDER_ATTR
from infra import access
from infra.constructs.functions import ServiceFunction
from infra.nag import acknowledge_table_grant

SCHEDULE = Duration.minutes(1)


class Reconciler(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.Table,
        queue: sqs.IQueue,
        bus: events.IEventBus,
        environment: dict[str, str],
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        table.add_global_secondary_index(
            index_name=DISPATCH_INDEX,
            partition_key=dynamodb.Attribute(name=DISPATCH_ATTR, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=ORDER_ATTR, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.handler = ServiceFunction(
            self,
            "Function",
            handler="reconciler",
            code=code,
            environment=environment,
            log_retention=log_retention,
            description="Sends the message and Job Queued event of jobs whose submit did not finish",
            memory_mib=256,
            timeout=Duration.seconds(60),
        )
        function = self.handler.function
        access.grant_table(table, function, access.RECONCILE_TABLE_ACTIONS)
        queue.grant_send_messages(function)
        bus.grant_put_events_to(function)
        acknowledge_table_grant(self.handler, table)
        self.schedule = events.Rule(
            self,
            "EveryMinute",
            description="Run the reconciler every minute",
            schedule=events.Schedule.rate(SCHEDULE),
            targets=[targets.LambdaFunction(function, retry_attempts=0)],
        )
