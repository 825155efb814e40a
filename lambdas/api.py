"""Lambda ``api``: API Gateway (REST, proxy integration) → the comfyserve route table."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.api.wiring import aws_app_from_env

logger = Logger(service="comfyserve-api")
app = aws_app_from_env()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
