"""Lambda ``drop_folder``: S3 ``Object Created`` events of the inbox bucket (a default-bus rule on ``inbox/``)
submit jobs (comfyserve.service.drop_folder); the terminal events of those jobs (a ``comfyserve`` bus rule on
``detail.metadata.drop_folder``) copy their results to the outbox (comfyserve.service.outbox)."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import S3EventBridgeNotificationEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.adapters.aws.clients import aws_client
from comfyserve.adapters.aws.s3 import S3BlobStore
from comfyserve.api.wiring import aws_service
from comfyserve.contracts.events import JobEvent
from comfyserve.service.drop_folder import DropFolder, DropFolderSettings
from comfyserve.service.outbox import Outbox
from comfyserve.settings import AwsResourceNames, ServiceSettings

logger = Logger(service="comfyserve-drop-folder")
names = AwsResourceNames.from_env()
if not names.inbox_bucket:
    raise ValueError("COMFYSERVE_INBOX_BUCKET is required")
service = aws_service(names, ServiceSettings.from_env())
inbox = S3BlobStore(aws_client("s3"), names.inbox_bucket)
tenants = DropFolderSettings.from_env().tenant_map()
drop_folder = DropFolder(service, inbox, tenants)
outbox = Outbox(service.deps.blobs, inbox, tenants)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("source") == "aws.s3":
        created = S3EventBridgeNotificationEvent(event).detail.object
        version = created.version_id or created.etag or created.sequencer or ""
        result = drop_folder.on_object_created(created.key, version, created.size)
        logger.info("drop", extra={"key": created.key, "outcome": result.outcome, "job_id": result.job_id})
        return asdict(result)
    delivered = outbox.on_job_event(JobEvent.model_validate(event["detail"]))
    return {"outbox": delivered.folder if delivered else None, "keys": delivered.keys if delivered else []}
