"""Lambda ``scaler``: every minute (EventBridge schedule) and on every ``Job Queued`` event (a rule on the
``comfyserve`` bus), set the worker service's desired count from the queue (comfyserve.service.autoscale)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyserve.adapters.aws.clients import aws_client
from comfyserve.adapters.aws.ecs_service import EcsWorkerService
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.service.autoscale import run_scaler
from comfyserve.service.scaling import ScalingPolicy


class ScalerResources(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMFYSERVE_", extra="ignore")

    queue_url: str
    bucket: str  # holds the scaler's small state object (scaler/state.json)
    ecs_cluster: str
    ecs_service: str


logger = Logger(service="comfyserve-scaler")
resources = ScalerResources()  # type: ignore[call-arg]  # read from the environment
policy = ScalingPolicy()
queue = SqsJobQueue(aws_client("sqs"), resources.queue_url)
service = EcsWorkerService(aws_client("ecs"), resources.ecs_cluster, resources.ecs_service)
state = S3BlobStore(aws_client("s3"), resources.bucket)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The event (scheduled or a job event) only triggers a run; its content does not matter."""
    result = run_scaler(queue, service, state, policy)
    return {
        "trigger": event.get("detail-type", "unknown"),
        "previous": result.previous,
        "desired": result.decision.desired,
        "updated": result.updated,
        "reason": result.decision.reason,
    }
