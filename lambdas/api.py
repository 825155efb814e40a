"""Lambda ``api``: API Gateway (REST, proxy integration) → the comfyserve route table.

Every ``comfyserve.*`` log line goes out through the Powertools Logger (JSON); once a route knows the request's
job (submit, get, cancel: ``job_id`` in the resolver's context) each line carries it as ``job_id``.
"""

import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.api.wiring import aws_app_from_env

logger = Logger(service="comfyserve-api")
app = aws_app_from_env()
copy_config_to_registered_loggers(source_logger=logger, include={"comfyserve"})


def job_id_key(record: logging.LogRecord) -> bool:
    """Adds the request's ``job_id`` to a line (the formatter writes a record's extra attributes as keys)."""
    job_id = app.context.get("job_id")
    if job_id is not None:
        record.job_id = job_id
    return True


logger.registered_handler.addFilter(job_id_key)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
