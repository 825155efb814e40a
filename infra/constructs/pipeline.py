"""The job pipeline's state: the jobs queue with its dead-letter queue, the jobs table, and the ``dead_letter``
function that fails each dead job once. Shapes match the AWS adapters (``comfyserve.adapters.aws``)."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.adapters.aws.dynamodb import ORDER_ATTR, PARTITION_KEY, TENANT_ATTR, TENANT_INDEX, TTL_ATTRIBUTE
from infra.constructs.functions import ServiceFunction
from infra.constructs.queues import secure_queue
from infra.nag import acknowledge

DLQ_RETENTION = Duration.days(14)


class Pipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        visibility_timeout: Duration,
        max_receive_count: int,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        record_retention_days: int | None = None,
    ) -> None:
        """``record_retention_days``: how long a finished job's record stays in the table (None: for good)."""
        super().__init__(scope, construct_id)
        self.record_retention_days = record_retention_days
        self.dead_letter_queue = secure_queue(self, "DeadLetters", retention_period=DLQ_RETENTION)
        self.queue = secure_queue(
            self,
            "Jobs",
            # The worker's heartbeat keeps extending a claimed message by this much (COMFYSERVE_VISIBILITY_TIMEOUT_S).
            visibility_timeout=visibility_timeout,
            retention_period=Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=max_receive_count),
        )
        # Events a function could not handle after its retries (completion, drop folder, webhooks): kept here
        # for an operator to inspect and replay; an alarm fires on the first one.
        self.failed_events = secure_queue(self, "FailedEvents", retention_period=DLQ_RETENTION)
        acknowledge(
            self.failed_events,
            "This queue is itself the dead letter of the functions' asynchronous invocations and rule targets",
            "AwsSolutions-SQS3",
        )
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(name=PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.table.add_global_secondary_index(
            index_name=TENANT_INDEX,
            partition_key=dynamodb.Attribute(name=TENANT_ATTR, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=ORDER_ATTR, type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.ALL,
        )
        self.dead_letter = ServiceFunction(
            self,
            "DeadLetter",
            handler="dead_letter",
            code=code,
            environment={},
            log_retention=log_retention,
            description="Fails each job whose message reached the dead-letter queue, once",
        )
        self.dead_letter.function.add_event_source(
            sources.SqsEventSource(self.dead_letter_queue, batch_size=10, report_batch_item_failures=True)
        )

    @property
    def resource_environment(self) -> dict[str, str]:
        """The variables of the queue and table (``AwsResourceNames``), with the records' retention: whatever
        moves a job to a terminal state (completion, dead_letter, api, drop_folder, worker) writes its expiry."""
        retention = str(self.record_retention_days) if self.record_retention_days is not None else "none"
        return {
            "COMFYSERVE_QUEUE_URL": self.queue.queue_url,
            "COMFYSERVE_DLQ_URL": self.dead_letter_queue.queue_url,
            "COMFYSERVE_TABLE": self.table.table_name,
            "COMFYSERVE_RECORD_RETENTION_DAYS": retention,
        }
