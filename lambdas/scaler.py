"""Lambda ``scaler``: every minute (EventBridge schedule) and when jobs are queued (``Job Queued`` events on the
``comfyserve`` bus go to an SQS nudge queue read in batches, infra/constructs/scaling.py), set the worker service's
desired count from the queue (comfyserve.service.autoscale)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.adapters.aws.asg_capacity import AsgCapacity
from comfyserve.adapters.aws.clients import aws_client
from comfyserve.adapters.aws.ecs_service import EcsWorkerService
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.adapters.aws.sqs import SqsJobQueue
from comfyserve.service.autoscale import ScalerTarget, run_scaler
from comfyserve.service.scaling import ScalingPolicy
from comfyserve.settings import AwsResourceNames

logger = Logger(service="comfyserve-scaler")
names = AwsResourceNames.from_env()
policy = ScalingPolicy.from_env()
target = ScalerTarget.from_env()
queue = SqsJobQueue(aws_client("sqs"), names.queue_url)
service = EcsWorkerService(aws_client("ecs"), target.ecs_cluster, target.ecs_service)
state = S3BlobStore(aws_client("s3"), names.bucket)  # the surplus clock (scaler/state.json), the published catalog
capacity = AsgCapacity(aws_client("autoscaling"), target.asg_name) if target.asg_name else None


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The event (the schedule's, or a batch of nudges from the queue) only triggers a run; its content does not
    matter."""
    result = run_scaler(
        queue, service, state, policy, capacity=capacity, backend=target.backend, catalog_key=names.catalog_key
    )
    return {
        "trigger": "nudge" if "Records" in event else event.get("detail-type", "unknown"),
        "previous": result.previous,
        "desired": result.decision.desired,
        "updated": result.updated,
        "instances": result.instances,
        "reason": result.decision.reason,
    }
