"""The dashboard (backlog, oldest message, running workers, job latency, errors, cold starts, model-load tiers,
GPU utilisation and memory per worker) and the alarms (errors, latency, backlog, a dead letter, model-load
failures) that notify an SNS topic."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from comfyserve.model_store.errors import LockTimeout, ModelStoreError, ModelVerifyError
from comfyserve.model_store.tiers import Tier
from infra.constructs.functions import METRICS_NAMESPACE
from infra.constructs.workers import GPU_METRICS_NAMESPACE

PERIOD = Duration.minutes(1)
WORKER_DIMENSIONS = {"service": "worker"}  # comfyserve.worker.telemetry: namespace comfyserve, service worker
MODEL_TIERS = tuple(tier.value.capitalize() for tier in Tier)  # ModelLoad<Tier> (comfyserve.worker.telemetry)
# A model that could not be made local shows in the worker's log as one of the model store's errors.
MODEL_LOAD_ERRORS = tuple(error.__name__ for error in (ModelStoreError, ModelVerifyError, LockTimeout))


def _worker_metric(name: str, statistic: str, label: str | None = None) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map=WORKER_DIMENSIONS,
        statistic=statistic,
        period=PERIOD,
        label=label,
    )


def _per_worker(measurement: str) -> cloudwatch.MathExpression:
    """The CloudWatch agent's ``nvidia_smi_<measurement>`` of every GPU host (one worker each), one line per
    instance."""
    return cloudwatch.MathExpression(
        expression=f'SEARCH(\'Namespace="{GPU_METRICS_NAMESPACE}" MetricName="nvidia_smi_{measurement}"\', '
        "'Average', 60)",
        label="",  # each line is named by its instance
        period=PERIOD,
    )


def _on_first(scope: Construct, construct_id: str, metric: cloudwatch.Metric, description: str) -> cloudwatch.Alarm:
    """An alarm on the first minute the metric reaches 1 (something went where nothing should go)."""
    return metric.create_alarm(
        scope,
        construct_id,
        threshold=1,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        alarm_description=description,
    )


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue: sqs.IQueue,
        dead_letter_queue: sqs.IQueue,
        failed_events: sqs.IQueue,
        service: ecs.Ec2Service,
        functions: Sequence[lambda_.IFunction],
        worker_logs: logs.ILogGroup,
        alarm_email: str | None,
        max_queue_age: Duration = Duration.minutes(10),
        backlog_threshold: int = 100,
    ) -> None:
        super().__init__(scope, construct_id)
        key = kms.Key(self, "TopicKey", description="comfyserve alarm topic", enable_key_rotation=True)
        key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        self.topic = sns.Topic(self, "Alarms", display_name="comfyserve alarms", master_key=key, enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))

        backlog = queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        in_flight = queue.metric_approximate_number_of_messages_not_visible(period=PERIOD, statistic="Maximum")
        oldest = queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
        dead = dead_letter_queue.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        failed = failed_events.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
        running = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": service.cluster.cluster_name, "ServiceName": service.service_name},
            statistic="Maximum",
            period=PERIOD,
        )
        failures = _worker_metric("JobsFailed", "Sum", "failed")
        succeeded = _worker_metric("JobsSucceeded", "Sum", "succeeded")
        errors = [function.metric_errors(period=PERIOD, statistic="Sum") for function in functions]
        function_errors = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(e{i}, 0)" for i in range(len(errors))) or "0",
            using_metrics={f"e{i}": metric for i, metric in enumerate(errors)},
            label="function errors",
            period=PERIOD,
        )
        failure_rate = cloudwatch.MathExpression(
            expression="IF(ok + bad > 0, 100 * bad / (ok + bad), 0)",
            using_metrics={"ok": succeeded, "bad": failures},
            label="failed jobs (%)",
            period=PERIOD,
        )
        latency = _worker_metric("Execution", "p95", "execution p95 (s)")
        queue_wait = _worker_metric("QueueWait", "p95", "queue wait p95 (s)")

        model_load_failures = logs.MetricFilter(
            self,
            "ModelLoadFailures",
            log_group=worker_logs,
            filter_pattern=logs.FilterPattern.any_term(*MODEL_LOAD_ERRORS),
            metric_namespace=METRICS_NAMESPACE,
            metric_name="ModelLoadFailures",
            metric_value="1",
            default_value=0,
        ).metric(period=PERIOD, statistic="Sum")

        alarm_action = actions.SnsAction(self.topic)
        self.alarms = {
            "DeadLetter": _on_first(self, "DeadLetterAlarm", dead, "A job message reached the dead-letter queue"),
            "FailedEvents": _on_first(
                self,
                "FailedEventsAlarm",
                failed,
                "A completion, drop-folder or webhook event failed after its retries (FailedEvents)",
            ),
            "OldestMessage": oldest.create_alarm(
                self,
                "OldestMessageAlarm",
                threshold=max_queue_age.to_seconds(),
                evaluation_periods=5,
                alarm_description="Jobs wait too long: workers cannot start (GPU quota or capacity?)",
            ),
            "Backlog": backlog.create_alarm(
                self,
                "BacklogAlarm",
                threshold=backlog_threshold,
                evaluation_periods=10,
                alarm_description="The backlog stays high: raise max_workers?",
            ),
            "FunctionErrors": function_errors.create_alarm(
                self,
                "FunctionErrorsAlarm",
                threshold=5,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                alarm_description="Lambda functions fail",
            ),
            "FailureRate": failure_rate.create_alarm(
                self,
                "FailureRateAlarm",
                threshold=20,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                alarm_description="More than 20% of jobs fail",
            ),
            "Latency": queue_wait.create_alarm(
                self,
                "QueueWaitAlarm",
                threshold=max_queue_age.to_seconds(),
                evaluation_periods=5,
                alarm_description="p95 queue wait above the limit",
            ),
            "ModelLoadFailures": _on_first(
                self, "ModelLoadFailuresAlarm", model_load_failures, "A worker could not load a model"
            ),
        }
        for alarm in self.alarms.values():
            alarm.add_alarm_action(alarm_action)

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Backlog", left=[backlog, in_flight], right=[running], width=12),
            cloudwatch.GraphWidget(title="Age of oldest message (s)", left=[oldest], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Job latency (s)", left=[latency, queue_wait], width=12),
            cloudwatch.GraphWidget(title="Jobs", left=[succeeded, failures], right=[function_errors], width=12),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Worker cold start (s)", left=[_worker_metric("ColdStart", "Maximum", "cold start")], width=12
            ),
            cloudwatch.GraphWidget(
                title="Model loads by tier (s, count)",
                left=[_worker_metric(f"ModelLoad{tier}", "SampleCount", tier.lower()) for tier in MODEL_TIERS],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="GPU utilisation per worker (%)", left=[_per_worker("utilization_gpu")], width=12
            ),
            cloudwatch.GraphWidget(
                title="GPU memory used per worker (MiB)", left=[_per_worker("memory_used")], width=12
            ),
        )
