"""The Lambda functions' common shape and their one code asset (the bundle of ``infra.lambda_bundle``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, Duration, ILocalBundling, RemovalPolicy
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra import lambda_bundle
from infra.nag import XRAY_REASON, acknowledge

# Handler modules under lambdas/, each with its entry point ``handler``.
HANDLERS = ("api", "completion", "dead_letter", "drop_folder", "reconciler", "scaler", "webhooks")
RUNTIME = lambda_.Runtime.PYTHON_3_13
METRICS_NAMESPACE = "comfyserve"


@jsii.implements(ILocalBundling)
class _PreparedBundle:
    """Local bundling: the bundle built by pip for the Lambda platform, so synth needs no Docker."""

    # jsii passes the bundling options as one positional struct, its Python typing as keywords: accept both.
    def try_bundle(self, output_dir: str, *_options: Any, **_keywords: Any) -> bool:
        lambda_bundle.copy_bundle(Path(output_dir))
        return True


def lambda_code() -> lambda_.Code:
    """The one asset every function runs; its hash is the bundle's content (skipped bundling: a fixed id)."""
    return lambda_.Code.from_asset(
        str(lambda_bundle.ROOT / "lambdas"),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            image=DockerImage.from_registry(f"public.ecr.aws/sam/build-python{lambda_bundle.RUNTIME_VERSION}"),
            local=_PreparedBundle(),
        ),
    )


class ServiceFunction(Construct):
    """A handler of lambdas/ on arm64 with Powertools settings, X-Ray tracing and its own log group.

    With ``failures``, an event that still fails after the retries (an asynchronous invocation, or a rule that
    could not invoke the function) is kept in that queue instead of being dropped."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        code: lambda_.Code,
        environment: dict[str, str],
        log_retention: logs.RetentionDays,
        description: str,
        memory_mib: int = 512,
        timeout: Duration | None = None,
        failures: sqs.IQueue | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.failures = failures
        if handler not in HANDLERS:
            raise ValueError(f"unknown handler module {handler!r} (one of {', '.join(HANDLERS)})")
        self.log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"lambdas.{handler}.handler",
            code=code,
            memory_size=memory_mib,
            timeout=timeout or Duration.seconds(30),
            description=description,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            on_failure=destinations.SqsDestination(failures) if failures is not None else None,
            environment={
                "POWERTOOLS_SERVICE_NAME": f"comfyserve-{handler.replace('_', '-')}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "LOG_LEVEL": "INFO",
                **environment,
            },
        )
        acknowledge(self, XRAY_REASON, "AwsSolutions-IAM5[Resource::*]")
        acknowledge(
            self,
            "The AWS managed basic execution role only lets the function write its own logs",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        )
        acknowledge(
            self,
            f"Python {lambda_bundle.RUNTIME_VERSION} is the runtime the bundle's binary wheels are built for"
            " (infra.lambda_bundle.RUNTIME_VERSION); supported by Lambda, one constant to move",
            "AwsSolutions-L1",
        )

    def rule_target(self, *, retry_attempts: int) -> targets.LambdaFunction:
        """This function as a rule's target; events the rule cannot deliver go to ``failures``."""
        return targets.LambdaFunction(self.function, retry_attempts=retry_attempts, dead_letter_queue=self.failures)
