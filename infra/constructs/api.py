"""The front door: a regional REST API whose every route but the health check needs an API key; usage plans
throttle and cap each key (a key is a tenant: the ``api`` function reads the tenant from the key's id).

Routes reach the ``api`` function (the comfyserve route table) through greedy proxy resources; the job
submissions are also declared on their own so that API Gateway refuses a body that is not a JSON object
before the function runs. Binary media types carry images both ways (``/upload/image``, ``/view``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.constructs.functions import ServiceFunction
from infra.log_groups import service_log_group
from infra.nag import acknowledge

STAGE = "v1"
BINARY_MEDIA_TYPES = ("multipart/form-data", "image/*", "application/octet-stream")
HEALTH_PATH = "/v1/health"
# API Gateway checks these bodies against a JSON Schema (draft 4) before the function runs; the function's
# pydantic models do the full validation.
# Path -> the members that must be JSON objects.
VALIDATED_BODIES: dict[str, tuple[str, ...]] = {"/v1/jobs": (), "/v1/validate": ("workflow",), "/prompt": ("prompt",)}
_ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "apiKeyId": "$context.identity.apiKeyId",
    "ip": "$context.identity.sourceIp",
    "method": "$context.httpMethod",
    "path": "$context.path",
    "status": "$context.status",
    "error": "$context.error.message",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "bytes": "$context.responseLength",
    "time": "$context.requestTimeEpoch",
}

# API Gateway's own refusals in the service's error shape ({"error": {...}, "node_errors": {}}).
_GATEWAY_ERRORS = (
    (apigw.ResponseType.BAD_REQUEST_BODY, "400", "invalid_request"),
    (apigw.ResponseType.API_CONFIGURATION_ERROR, "500", "server_error"),
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "403", "forbidden"),
    (apigw.ResponseType.INVALID_API_KEY, "403", "forbidden"),
    (apigw.ResponseType.THROTTLED, "429", "throttled"),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded"),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "payload_too_large"),
)


def _error_template(error_type: str) -> str:
    return (
        f'{{"error": {{"type": "{error_type}", "message": $context.error.messageString, '
        '"details": "refused by API Gateway", "extra_info": {}}, "node_errors": {}}'
    )


@dataclass(frozen=True, kw_only=True)
class UsageLimits:
    """Per API key: steady requests per second, burst, requests per day."""

    rate_limit: float
    burst_limit: int
    quota_per_day: int


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: dict[str, str],
        limits: UsageLimits,
        code: lambda_.Code,
        log_retention: logs.RetentionDays,
        cloud_watch_role: bool = True,
    ) -> None:
        super().__init__(scope, construct_id)
        self.handler = ServiceFunction(
            self,
            "Handler",
            handler="api",
            code=code,
            environment={**environment, "COMFYSERVE_AUTH": "api_gateway"},
            log_retention=log_retention,
            description="comfyserve HTTP API (route table) behind API Gateway",
            memory_mib=1024,
            timeout=Duration.seconds(29),
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            description="comfyserve: ComfyUI workflows as jobs",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            binary_media_types=list(BINARY_MEDIA_TYPES),
            cloud_watch_role=cloud_watch_role,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(_ACCESS_LOG_FIELDS)),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                tracing_enabled=True,
                # The whole API's ceiling, above every key's own limit.
                throttling_rate_limit=max(100.0, limits.rate_limit * 10),
                throttling_burst_limit=max(200, limits.burst_limit * 10),
            ),
        )
        # API Gateway's execution log group (ERROR level), so that it keeps the stack's retention.
        self.execution_logs = service_log_group(
            self,
            "ExecutionLogs",
            name=f"API-Gateway-Execution-Logs_{self.rest_api.rest_api_id}/{STAGE}",
            retention=log_retention,
            before=self.rest_api.deployment_stage,
        )
        self.validator = self.rest_api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        self._integration = apigw.LambdaIntegration(self.handler.function, allow_test_invoke=False)
        keyed = apigw.MethodOptions(api_key_required=True)
        self.rest_api.root.add_method("ANY", self._integration, api_key_required=True)
        self.rest_api.root.add_proxy(default_integration=self._integration, default_method_options=keyed)
        self._resource(HEALTH_PATH).add_method("GET", self._integration, api_key_required=False)
        for path, members in VALIDATED_BODIES.items():
            model = self.rest_api.add_model(
                f"{path.strip('/').replace('/', '-').title().replace('-', '')}Body",
                content_type="application/json",
                schema=apigw.JsonSchema(
                    schema=apigw.JsonSchemaVersion.DRAFT4,
                    title=f"{path} body",
                    type=apigw.JsonSchemaType.OBJECT,
                    required=list(members) or None,
                    properties={name: apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT) for name in members} or None,
                ),
            )
            self._resource(path).add_method(
                "POST",
                self._integration,
                api_key_required=True,
                request_validator=self.validator,
                request_models={"application/json": model},
            )

        for response_type, status, error_type in _GATEWAY_ERRORS:
            self.rest_api.add_gateway_response(
                response_type.response_type,
                type=response_type,
                status_code=status,
                templates={"application/json": _error_template(error_type)},
            )

        self.usage_plan = self.rest_api.add_usage_plan(
            "UsagePlan",
            description="Default plan of every tenant key (add keys with `aws apigateway create-usage-plan-key`)",
            throttle=apigw.ThrottleSettings(rate_limit=limits.rate_limit, burst_limit=limits.burst_limit),
            quota=apigw.QuotaSettings(limit=limits.quota_per_day, period=apigw.Period.DAY),
        )
        self.usage_plan.add_api_stage(stage=self.rest_api.deployment_stage)
        acknowledge(
            self.rest_api,
            "Callers are tenants identified by API keys on usage plans (the issue's design): API Gateway refuses a"
            " request without a valid key and the function scopes every read and write to the key's tenant",
            "AwsSolutions-APIG4",
            "AwsSolutions-COG4",
        )
        acknowledge(
            self.rest_api,
            "A WAF web ACL costs per month and per rule; a team that wants one associates its own with the stage"
            " (docs/DEPLOY.md)",
            "AwsSolutions-APIG3",
        )
        acknowledge(
            self.rest_api,
            "API Gateway's account-level CloudWatch Logs role uses the AWS managed push policy (logs only)",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
        )

    def _resource(self, path: str) -> apigw.IResource:
        """The resource at ``path``; a literal resource created on the way also gets the keyed ANY and greedy
        proxy that the root has, so the paths below it still reach the function (no route falls through)."""
        keyed = apigw.MethodOptions(api_key_required=True)
        resource: apigw.IResource = self.rest_api.root
        for part in path.strip("/").split("/"):
            child = resource.get_resource(part)
            if child is None:
                child = resource.add_resource(part)
                child.add_method("ANY", self._integration, api_key_required=True)
                child.add_proxy(default_integration=self._integration, default_method_options=keyed)
            resource = child
        return resource
