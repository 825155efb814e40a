"""Lambda ``dead_letter``: batches from the jobs' dead-letter queue (SQS event source with
ReportBatchItemFailures) fail each dead job once through the completion path (comfyserve.service.dead_letter);
a record that hit a passing error is reported back and redelivered, the others are deleted."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.service.completion import Completion
from comfyserve.service.dead_letter import DeadLetters
from comfyserve.settings import AwsResourceNames

logger = Logger(service="comfyserve-dead-letter")
ports = aws_ports(AwsResourceNames.from_env())
dead_letters = DeadLetters(ports.jobs, ports.blobs, Completion(ports.jobs, ports.events, ports.blobs))
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> str:
    outcome = dead_letters.on_dead_letter(record.body, int(record.attributes.approximate_receive_count))
    logger.info("dead letter", extra={"message_id": record.message_id, "outcome": outcome.value})
    return outcome.value


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
