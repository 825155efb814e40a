"""Which rule starts which function: completion, webhooks, drop folder, scaler; the bus and its archive."""

from __future__ import annotations

from typing import Any

from comfyserve.adapters.aws.eventbridge import EVENT_SOURCE
from tests.infra.conftest import Synth, function_id, function_role, grants, only


def _rules_targeting(synth: Synth, handler: str) -> list[dict[str, Any]]:
    function = {"Fn::GetAtt": [function_id(synth, handler), "Arn"]}
    return [
        rule["Properties"]
        for rule in synth.resources("AWS::Events::Rule").values()
        if any(target["Arn"] == function for target in rule["Properties"].get("Targets", []))
    ]


def _bucket_with_notifications(synth: Synth, rule: dict[str, Any]) -> str:
    bucket: str = rule["EventPattern"]["detail"]["bucket"]["name"][0]["Ref"]
    notifications = [
        n["Properties"]
        for n in synth.resources("Custom::S3BucketNotifications").values()
        if n["Properties"]["BucketName"] == {"Ref": bucket}
    ]
    assert notifications and notifications[0]["NotificationConfiguration"] == {"EventBridgeConfiguration": {}}
    return bucket


def test_manifest_creation_on_the_results_bucket_completes_the_job(synth: Synth) -> None:
    (rule,) = _rules_targeting(synth, "completion")
    assert "EventBusName" not in rule  # S3 events arrive on the default bus
    pattern = rule["EventPattern"]
    assert pattern["source"] == ["aws.s3"] and pattern["detail-type"] == ["Object Created"]
    assert pattern["detail"]["object"]["key"] == [{"wildcard": "outputs/*/manifest.json"}]
    bucket = _bucket_with_notifications(synth, rule)
    environment = synth.template["Resources"][function_id(synth, "completion")]["Properties"]["Environment"]
    assert environment["Variables"]["COMFYSERVE_BUCKET"] == {"Ref": bucket}


def test_inbox_objects_reach_the_drop_folder_and_its_outbox_never_does(synth: Synth) -> None:
    rules = _rules_targeting(synth, "drop_folder")
    (inbox,) = [rule for rule in rules if rule["EventPattern"]["source"] == ["aws.s3"]]
    assert inbox["EventPattern"]["detail"]["object"]["key"] == [{"prefix": "inbox/"}]
    bucket = _bucket_with_notifications(synth, inbox)
    environment = synth.template["Resources"][function_id(synth, "drop_folder")]["Properties"]["Environment"]
    assert environment["Variables"]["COMFYSERVE_INBOX_BUCKET"] == {"Ref": bucket}
    (ended,) = [rule for rule in rules if rule["EventPattern"]["source"] == [EVENT_SOURCE]]
    assert sorted(ended["EventPattern"]["detail-type"]) == ["Job Cancelled", "Job Failed", "Job Succeeded"]
    assert ended["EventPattern"]["detail"] == {"metadata": {"drop_folder": {"key": [{"exists": True}]}}}
    bus, _ = only(synth, "AWS::Events::EventBus")
    assert ended["EventBusName"] == {"Ref": bus}


def test_webhooks_get_the_events_of_jobs_with_a_webhook(synth: Synth) -> None:
    (rule,) = _rules_targeting(synth, "webhooks")
    assert rule["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "detail-type": [{"anything-but": ["Job Progress"]}],
        "detail": {"webhook": {"url": [{"exists": True}]}},
    }
    bus, _ = only(synth, "AWS::Events::EventBus")
    assert rule["EventBusName"] == {"Ref": bus}


def test_scaler_runs_every_minute_and_on_queued_jobs_in_bounded_batches(synth: Synth) -> None:
    (schedule,) = _rules_targeting(synth, "scaler")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    (queued,) = [
        rule["Properties"]
        for rule in synth.resources("AWS::Events::Rule").values()
        if rule["Properties"].get("EventPattern", {}).get("detail-type") == ["Job Queued"]
    ]
    assert queued["EventPattern"] == {"source": [EVENT_SOURCE], "detail-type": ["Job Queued"]}
    bus, _ = only(synth, "AWS::Events::EventBus")
    assert queued["EventBusName"] == {"Ref": bus}
    ((nudges, _),) = [target["Arn"]["Fn::GetAtt"] for target in queued["Targets"]]
    assert synth.template["Resources"][nudges]["Type"] == "AWS::SQS::Queue"
    (mapping,) = [
        m["Properties"]
        for m in synth.resources("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [nudges, "Arn"]}
    ]
    assert mapping["FunctionName"] == {"Ref": function_id(synth, "scaler")}
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": 2}  # a burst of jobs makes a few scaler runs
    assert mapping["BatchSize"] == 100 and mapping["MaximumBatchingWindowInSeconds"] == 1


def test_reconciler_runs_every_minute_and_may_send_publish_and_query_the_dispatch_index(synth: Synth) -> None:
    (schedule,) = _rules_targeting(synth, "reconciler")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    role = function_role(synth, "reconciler")
    for action in ("sqs:SendMessage", "events:PutEvents", "dynamodb:Query", "dynamodb:UpdateItem"):
        assert grants(synth, role, action), action


def test_bus_is_named_comfyserve_and_archived(synth: Synth) -> None:
    bus, properties = only(synth, "AWS::Events::EventBus")
    assert properties["Name"] == "comfyserve"
    _, archive = only(synth, "AWS::Events::Archive")
    assert archive["SourceArn"] == {"Fn::GetAtt": [bus, "Arn"]}
    assert archive["RetentionDays"] == 30
    assert archive["EventPattern"] == {"source": [EVENT_SOURCE]}


def test_every_function_is_invoked_only_by_its_own_triggers(synth: Synth) -> None:
    principals: dict[str, set[str]] = {}
    for permission in synth.resources("AWS::Lambda::Permission").values():
        properties = permission["Properties"]
        target = properties["FunctionName"]
        name = target["Fn::GetAtt"][0] if "Fn::GetAtt" in target else target["Ref"]
        principals.setdefault(name, set()).add(properties["Principal"])
    assert principals[function_id(synth, "api")] == {"apigateway.amazonaws.com"}
    for handler in ("completion", "drop_folder", "reconciler", "scaler", "webhooks"):
        assert principals[function_id(synth, handler)] == {"events.amazonaws.com"}
    assert function_id(synth, "dead_letter") not in principals  # polled from its queue by Lambda itself
