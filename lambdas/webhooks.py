"""Lambda ``webhooks``: job events from the ``comfyserve`` bus (a rule on jobs that carry a webhook) POSTed to
the job's webhook with Standard Webhooks signatures (comfyserve.service.webhook_delivery)."""

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.service.webhook_delivery import WebhookSettings, WebhookSigner, deliver_bus_event

logger = Logger(service="comfyserve-webhooks")
settings = WebhookSettings.from_env()
signer = WebhookSigner(
    settings.webhook_secret or str(parameters.get_secret(settings.webhook_secret_arn or "", max_age=3600))
)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    attempt = deliver_bus_event(event["detail"], signer, settings, time.sleep)
    if attempt is None:
        return {"delivered": False, "reason": "no webhook for this event"}
    logger.info("webhook delivery", extra={"attempt": attempt.attempt, "outcome": attempt.outcome})
    return {"delivered": attempt.outcome == "delivered", "status_code": attempt.status_code, "error": attempt.error}
