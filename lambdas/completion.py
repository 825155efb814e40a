"""Lambda ``completion``: S3 "Object Created" of a job's manifest.json (EventBridge, default bus, source
``aws.s3``) → the completion use case (comfyserve.service.completion), the single writer of the job's terminal
state. A failed invocation raises, so EventBridge/Lambda retry it; duplicates change nothing."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import S3EventNotificationEventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.service.completion import Completion
from comfyserve.settings import AwsResourceNames

logger = Logger(service="comfyserve-completion")
names = AwsResourceNames.from_env()
ports = aws_ports(names)
completion = Completion(ports.jobs, ports.events, ports.blobs)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    created = parse(event=event, model=S3EventNotificationEventBridgeModel)
    bucket, key = created.detail.bucket.name, created.detail.object.key
    if bucket != names.bucket:
        logger.warning("object of another bucket", extra={"bucket": bucket, "key": key})
        return {"key": key, "outcome": "ignored"}
    logger.append_keys(key=key)
    outcome = completion.on_object_created(key)
    logger.info("completion", extra={"outcome": outcome.value})
    return {"key": key, "outcome": outcome.value}
