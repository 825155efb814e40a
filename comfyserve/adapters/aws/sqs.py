"""JobQueue on SQS. Dead-lettering is the queue's redrive policy (set where the queue is created); the
dead-letter queue is read through its own URL as another :class:`SqsJobQueue`. One request per operation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from comfyserve.adapters.aws.errors import error_code
from comfyserve.adapters.queue_limits import check_receive_args, check_visibility
from comfyserve.contracts.jobs import QueueMessage
from comfyserve.ports import QueueDepth, ReceiptInvalid, ReceivedMessage

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

STALE_RECEIPT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",
    }
)


class SqsJobQueue:
    def __init__(self, client: SQSClient, queue_url: str, dead_letter_url: str | None = None) -> None:
        self._sqs = client
        self.queue_url = queue_url
        self._dead_letters = SqsJobQueue(client, dead_letter_url) if dead_letter_url else None

    @property
    def dead_letters(self) -> SqsJobQueue | None:
        return self._dead_letters

    def send(self, message: QueueMessage) -> str:
        response = self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=message.model_dump_json())
        return response["MessageId"]

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        check_receive_args(max_messages, visibility_timeout_s, wait_s)
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=visibility_timeout_s,
            WaitTimeSeconds=wait_s,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            ReceivedMessage(
                body=message["Body"],
                receipt=message["ReceiptHandle"],
                receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                message_id=message["MessageId"],
            )
            for message in response.get("Messages", [])
        ]

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        check_visibility(seconds)
        try:
            self._sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=receipt, VisibilityTimeout=seconds
            )
        except ClientError as exc:
            if error_code(exc) in STALE_RECEIPT_CODES:
                raise ReceiptInvalid(receipt) from None
            raise

    def delete(self, receipt: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except ClientError as exc:
            if error_code(exc) not in STALE_RECEIPT_CODES:
                raise

    def release(self, receipt: str) -> None:
        self.extend_visibility(receipt, 0)

    def approximate_depth(self) -> QueueDepth:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return QueueDepth(
            visible=int(attributes.get("ApproximateNumberOfMessages", "0")),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", "0")),
        )
