"""Lambda ``reconciler``: every minute (EventBridge schedule), finish the dispatch of each job its submit left
undone past the grace period (``COMFYSERVE_DISPATCH_GRACE_S``): send its queue message if it is still queued,
publish its owed ``Job Queued`` event (comfyserve.service.reconcile; one Query per index shard, never a scan)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.service.reconcile import Reconciler
from comfyserve.settings import AwsResourceNames, ServiceSettings

logger = Logger(service="comfyserve-reconciler")
ports = aws_ports(AwsResourceNames.from_env())
reconciler = Reconciler(ports.jobs, ports.queue, ports.events, grace_s=ServiceSettings.from_env().dispatch_grace_s)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = reconciler.run()
    if report.resent or report.failed:
        logger.warning("jobs dispatched by the reconciler", extra={"resent": report.resent, "failed": report.failed})
    return {"resent": report.resent, "announced": report.announced, "failed": report.failed}
