"""Queue, dead-letter queue and jobs table: the shapes the AWS adapters expect (comfyserve.adapters.aws)."""

from __future__ import annotations

from typing import Any

from comfyserve.adapters.aws.dynamodb import (
    DISPATCH_ATTR,
    DISPATCH_INDEX,
    ORDER_ATTR,
    PARTITION_KEY,
    TENANT_ATTR,
    TENANT_INDEX,
)
from comfyserve.settings import CloudWorkerSettings
from infra.constructs.pipeline import TTL_ATTRIBUTE
from tests.infra.conftest import Synth, function_id


def _queues(synth: Synth) -> tuple[dict[str, Any], dict[str, Any], str]:
    queues = synth.resources("AWS::SQS::Queue")
    (jobs_id,) = [name for name, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    dlq_id = queues[jobs_id]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return queues[jobs_id]["Properties"], queues[dlq_id]["Properties"], dlq_id


def test_jobs_queue_is_encrypted_redrives_and_keeps_the_heartbeat_visibility(synth: Synth) -> None:
    jobs, dead, dead_id = _queues(synth)
    visibility = CloudWorkerSettings.model_fields["visibility_timeout_s"].default
    assert jobs["VisibilityTimeout"] == visibility == 120
    assert jobs["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dead_id, "Arn"]}, "maxReceiveCount": 3}
    assert jobs["SqsManagedSseEnabled"] is True and dead["SqsManagedSseEnabled"] is True
    assert dead["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_queues_refuse_requests_without_tls(template: Any) -> None:
    policies = template.find_resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 4
    refuse_plain = {"Bool": {"aws:SecureTransport": "false"}}
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s.get("Condition") == refuse_plain for s in statements)


def test_jobs_table_matches_the_adapter(template: Any) -> None:
    (table,) = template.find_resources("AWS::DynamoDB::Table").values()
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    expected = {
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
        "SSESpecification": {"SSEEnabled": True},
        "GlobalSecondaryIndexes": [
            {
                "IndexName": TENANT_INDEX,
                "KeySchema": [
                    {"AttributeName": TENANT_ATTR, "KeyType": "HASH"},
                    {"AttributeName": ORDER_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            {
                "IndexName": DISPATCH_INDEX,
                "KeySchema": [
                    {"AttributeName": DISPATCH_ATTR, "KeyType": "HASH"},
                    {"AttributeName": ORDER_ATTR, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
        ],
    }
    assert {key: properties.get(key) for key in expected} == expected


def test_dead_letter_function_reads_the_dlq_with_partial_batch_failures(synth: Synth) -> None:
    _, _, dead_id = _queues(synth)
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [dead_id, "Arn"]}
    ]
    assert mapping["FunctionName"] == {"Ref": function_id(synth, "dead_letter")}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BatchSize"] == 10


def test_events_a_function_cannot_handle_are_kept_not_dropped(synth: Synth) -> None:
    queues = synth.resources("AWS::SQS::Queue")
    (failed,) = [name for name in queues if name.startswith("PipelineFailedEvents")]
    assert queues[failed]["Properties"]["SqsManagedSseEnabled"] is True
    kept = {"Fn::GetAtt": [failed, "Arn"]}
    for handler in ("completion", "drop_folder", "webhooks"):
        function = function_id(synth, handler)
        (invoke_config,) = [
            c["Properties"]
            for c in synth.resources("AWS::Lambda::EventInvokeConfig").values()
            if c["Properties"]["FunctionName"] == {"Ref": function}
        ]
        assert invoke_config["DestinationConfig"] == {"OnFailure": {"Destination": kept}}
        for rule in synth.resources("AWS::Events::Rule").values():
            for target in rule["Properties"].get("Targets", []):
                if target["Arn"] == {"Fn::GetAtt": [function, "Arn"]}:
                    assert target["DeadLetterConfig"] == {"Arn": kept}
