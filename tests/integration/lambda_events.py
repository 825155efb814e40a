"""Lambda events in the shapes AWS sends them, and a Lambda context, for handler tests on moto."""

from __future__ import annotations

import importlib
import sys
import uuid
from types import ModuleType, SimpleNamespace
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


def context(function: str) -> Any:
    return SimpleNamespace(
        function_name=function,
        memory_limit_in_mb=512,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}",
        aws_request_id=str(uuid.uuid4()),
    )


def scheduled_event(rule: str = "comfyserve-scaler-tick") -> dict[str, Any]:
    """What an EventBridge schedule (``rate(1 minute)``) delivers."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-12-02T12:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"],
        "detail": {},
    }


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    """An SQS event source mapping's batch from messages as ``receive_message`` returned them (with
    ``MessageSystemAttributeNames=["All"]``)."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for message, arn in ((record["message"], record["arn"]) for record in records)
        ]
    }


def fresh_import(name: str) -> ModuleType:
    """Import a handler module anew, so that it reads the environment the test set."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)
