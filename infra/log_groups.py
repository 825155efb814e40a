"""Log retention: every log group of the stack keeps ``retention_days`` (rounded up to a period CloudWatch Logs
allows), CDK's own custom-resource functions included (CDK leaves theirs to Lambda, which keeps logs forever)."""

from __future__ import annotations

from aws_cdk import CfnResource, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

# The periods CloudWatch Logs allows (days), in the order jsii lists ``RetentionDays`` (whose values are names).
ALLOWED_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)
_RETENTION = dict(
    zip(
        ALLOWED_DAYS,
        [member for member in logs.RetentionDays if member is not logs.RetentionDays.INFINITE],
        strict=True,
    )
)


def log_retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention that keeps at least ``days``."""
    return next((member for allowed, member in _RETENTION.items() if allowed >= days), logs.RetentionDays.TEN_YEARS)


def service_log_group(
    scope: Construct, construct_id: str, *, name: str, retention: logs.RetentionDays, before: Construct
) -> logs.LogGroup:
    """The log group an AWS service would create itself (without retention) on its first write, made by the stack
    first: ``before`` (what makes the service write) waits for it."""
    group = logs.LogGroup(
        scope, construct_id, log_group_name=name, retention=retention, removal_policy=RemovalPolicy.DESTROY
    )
    before.node.add_dependency(group)
    return group


def give_log_groups(stack: Stack, retention: logs.RetentionDays) -> None:
    """A log group with ``retention`` for each Lambda function of ``stack`` that has none (CDK's custom-resource
    handlers)."""
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource) or construct.cfn_resource_type != "AWS::Lambda::Function":
            continue
        if isinstance(construct, lambda_.CfnFunction) and construct.logging_config is not None:
            continue  # a ServiceFunction, with its own group
        scope = construct.node.scope
        assert isinstance(scope, Construct)
        group = logs.LogGroup(
            scope, f"{construct.node.id}Logs", retention=retention, removal_policy=RemovalPolicy.DESTROY
        )
        construct.add_property_override("LoggingConfig.LogGroup", group.log_group_name)
