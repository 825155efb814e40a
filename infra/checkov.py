"""checkov's CloudFormation findings that the stack does not fix, each acknowledged with its reason in the
template's own metadata (``Metadata.checkov.skip``, which checkov reads): run
``checkov -f cdk.out/comfyserve.template.json --framework cloudformation`` and every failure left is new."""

from __future__ import annotations

from aws_cdk import CfnResource, Stack

from infra.nag import ENV_REASON

_LAMBDA = (
    (
        "CKV_AWS_115",
        "Concurrency is bounded where it matters (the scaler's nudges at two, SQS event sources); a"
        " reserved concurrency per function would take capacity from the account's other functions",
    ),
    (
        "CKV_AWS_116",
        "Asynchronous failures go to the FailedEvents queue through on-failure destinations and rule"
        " dead-letter queues; the API and CDK's custom-resource handlers are invoked synchronously",
    ),
    (
        "CKV_AWS_117",
        "The functions call AWS APIs only; inside the VPC they would need NAT or more interface"
        " endpoints for nothing they reach",
    ),
    ("CKV_AWS_173", ENV_REASON),
)
# Resource type -> (check id, reason) acknowledged on every resource of that type.
BY_TYPE: dict[str, tuple[tuple[str, str], ...]] = {
    "AWS::Lambda::Function": _LAMBDA,
    "AWS::Logs::LogGroup": (
        (
            "CKV_AWS_158",
            "CloudWatch Logs encrypts every log group at rest; a customer managed key per group adds"
            " a key policy and cost without a reader it keeps out",
        ),
    ),
    "AWS::SQS::Queue": (
        (
            "CKV_AWS_27",
            "Encrypted with SQS managed server-side encryption (SqsManagedSseEnabled); checkov asks for a KMS key",
        ),
    ),
    "AWS::DynamoDB::Table": (
        (
            "CKV_AWS_119",
            "Encrypted at rest with the AWS managed key; a customer managed key adds cost and a key"
            " policy to keep in step with every role that reads jobs",
        ),
    ),
    "AWS::SecretsManager::Secret": (
        ("CKV_AWS_149", "Encrypted with Secrets Manager's AWS managed key; one function reads it"),
    ),
    "AWS::ApiGateway::Stage": (
        ("CKV_AWS_120", "Responses are per tenant and follow a job's state: a cache would serve stale job records"),
    ),
}
# Construct path (under the stack) -> acknowledgements of that one resource.
BY_PATH: dict[str, tuple[tuple[str, str], ...]] = {
    "AccessLogs/Resource": (
        ("CKV_AWS_18", "This is the access-log bucket the other buckets log to: logging it to itself would loop"),
        ("CKV_AWS_21", "Log objects are written once by the S3 logging service and age out; versions add nothing"),
    ),
    "Api/RestApi/Default/v1/health/GET/Resource": (
        ("CKV_AWS_59", "GET /v1/health answers without an API key by design (load balancers and probes)"),
    ),
}
INSTANCE_POLICY = (
    (
        "CKV_AWS_111",
        "The ECS agent's and the host's calls without resource-level permissions (registration,"
        " telemetry, the lifecycle look-up); PutMetricData is held to the GPU metrics namespace by a condition",
    ),
)


def acknowledge_checkov(stack: Stack) -> None:
    """Write the acknowledgements into the resources' metadata."""
    for construct in stack.node.find_all():
        if not isinstance(construct, CfnResource):
            continue
        path = construct.node.path.removeprefix(f"{stack.node.path}/")
        skips = BY_TYPE.get(construct.cfn_resource_type, ()) + BY_PATH.get(path, ())
        if path.startswith("Workers/") and path.endswith("/InstanceRole/DefaultPolicy/Resource"):
            skips += INSTANCE_POLICY
        if skips:
            construct.add_metadata("checkov", {"skip": [{"id": check, "comment": reason} for check, reason in skips]})
