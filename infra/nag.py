"""cdk-nag (AwsSolutions, v3) acknowledgements, each with its reason, made where the finding's cause is."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnResource, Stack, Token, Validations
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

# The action groups of CDK's S3 grants (grant_read, grant_put, grant_read_write).
_S3_GRANT_ACTIONS = ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:Abort*", "s3:DeleteObject*")
XRAY_REASON = "X-Ray tracing: xray:PutTraceSegments and PutTelemetryRecords have no resource-level permissions"


def acknowledge(scope: IConstruct, reason: str, *findings: str) -> None:
    """Acknowledge ``findings`` (rule ids such as ``AwsSolutions-ECS2``, or ``AwsSolutions-IAM5[...]`` for one
    finding) on ``scope`` and everything under it.

    Written as the acknowledged-rules metadata that cdk-nag 3 reads (what ``Validations.acknowledge`` records),
    because ``Validations.acknowledge`` refuses finding ids that contain ``::`` (most IAM5 findings)."""
    scope.node.add_metadata(Validations.ACKNOWLEDGED_RULES_METADATA_KEY, dict.fromkeys(findings, reason))


def _logical_id(resource: IConstruct) -> str:
    child = resource.node.default_child
    assert isinstance(child, CfnResource)
    return Stack.of(resource).get_logical_id(child)


def _arn_ref(resource: IConstruct) -> str:
    """How cdk-nag writes the ARN of ``resource`` in a finding: ``<LogicalId.Arn>``."""
    return f"<{_logical_id(resource)}.Arn>"


def acknowledge_bucket_grant(scope: IConstruct, bucket: s3.IBucket, reason: str, *key_patterns: str) -> None:
    """A CDK grant on ``bucket`` (objects under ``key_patterns``, default every key): its action groups and
    object wildcards are the findings."""
    resources = [f"Resource::{_arn_ref(bucket)}/{pattern}" for pattern in (key_patterns or ("*",))]
    acknowledge(
        scope,
        f"Grant on the one bucket {bucket.node.path}: {reason}",
        *(f"AwsSolutions-IAM5[Action::{action}]" for action in _S3_GRANT_ACTIONS),
        *(f"AwsSolutions-IAM5[{resource}]" for resource in resources),
    )


def acknowledge_table_grant(scope: IConstruct, table: dynamodb.ITable) -> None:
    acknowledge(
        scope,
        f"Grant on the one table {table.node.path}: its indexes (by_tenant lists a tenant's jobs)",
        f"AwsSolutions-IAM5[Resource::{_arn_ref(table)}/index/*]",
    )


def group_arn(scope: IConstruct, group: autoscaling.IAutoScalingGroup) -> str:
    """The ARN of ``group`` by its name (the id inside a group's ARN is generated)."""
    return Stack.of(scope).format_arn(
        service="autoscaling",
        resource="autoScalingGroup",
        resource_name=f"*:autoScalingGroupName/{group.auto_scaling_group_name}",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


def acknowledge_group_arn(scope: IConstruct, group: autoscaling.IAutoScalingGroup, reason: str) -> None:
    """The wildcard of :func:`group_arn` in a statement of ``scope``."""
    stack = Stack.of(scope)
    region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    name = f"<{_logical_id(group)}>"
    acknowledge(
        scope,
        reason,
        *(
            f"AwsSolutions-IAM5[Resource::arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:"
            f"autoScalingGroupName/{name}]"
            for partition in ("aws", "<AWS::Partition>")
        ),
    )


ENV_REASON = "The environment holds resource names and settings (the settings contract), never a secret"
EXECUTION_ROLE_REASON = (
    "ECS task execution role: ecr:GetAuthorizationToken has no resource-level permissions (image pulls and"
    " logs are granted on the repository and log group)"
)
