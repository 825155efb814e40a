"""What the stack keeps and for how long: every log group keeps retention_days (CDK's own handlers' too), and the
results bucket ages out what one job leaves behind, never the catalog or the scaler's state."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import aws_logs as logs

from infra import access
from infra.log_groups import ALLOWED_DAYS, log_retention
from tests.infra.conftest import Synth


def test_every_log_group_keeps_the_retention_setting(synth: Synth) -> None:
    groups = synth.resources("AWS::Logs::LogGroup")
    assert len(groups) >= 10
    assert {name: group["Properties"].get("RetentionInDays") for name, group in groups.items()} == dict.fromkeys(
        groups, 30
    )


def test_the_groups_aws_services_create_are_made_by_the_stack_first(synth: Synth) -> None:
    names = json.dumps(
        [group["Properties"].get("LogGroupName") for group in synth.resources("AWS::Logs::LogGroup").values()]
    )
    assert "API-Gateway-Execution-Logs_" in names and "/v1" in names
    assert "/aws/ecs/containerinsights/" in names and "/performance" in names


def test_every_function_logs_to_a_group_of_the_stack(synth: Synth) -> None:
    functions = synth.resources("AWS::Lambda::Function")
    assert len(functions) == 9  # seven handlers, CDK's bucket-notification and default-security-group handlers
    for name, function in functions.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert synth.template["Resources"][group]["Type"] == "AWS::Logs::LogGroup", name


@pytest.mark.parametrize(
    ("days", "kept"),
    [
        (1, logs.RetentionDays.ONE_DAY),
        (30, logs.RetentionDays.ONE_MONTH),
        (31, logs.RetentionDays.TWO_MONTHS),
        (400, logs.RetentionDays.THIRTEEN_MONTHS),
        (4000, logs.RetentionDays.TEN_YEARS),
    ],
)
def test_a_retention_rounds_up_to_a_period_cloudwatch_allows(days: int, kept: logs.RetentionDays) -> None:
    assert log_retention(days) == kept
    assert len(ALLOWED_DAYS) == len(logs.RetentionDays) - 1  # every member but INFINITE has its period


def _rules(synth: Synth, bucket_id_prefix: str) -> list[dict[str, Any]]:
    (bucket,) = [b for name, b in synth.resources("AWS::S3::Bucket").items() if name.startswith(bucket_id_prefix)]
    rules: list[dict[str, Any]] = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    return rules


def test_the_results_bucket_expires_job_prefixes_only(synth: Synth) -> None:
    rules = _rules(synth, "NotificationsResults")
    expiring = {rule.get("Prefix"): rule["ExpirationInDays"] for rule in rules if "ExpirationInDays" in rule}
    assert expiring == {"workflows/": 30, "inputs/": 30, "outputs/": 30}
    assert access.JOB_PREFIXES == ("workflows/", "inputs/", "outputs/")
    for kept in ("catalog/object_info.json", "scaler/state.json", "uploads/t/a.png", "assets/t/a.json"):
        assert not any(kept.startswith(prefix) for prefix in expiring)
    # Replaced versions (the scaler's state is rewritten often) go after a day, everywhere.
    assert {
        "ExpiredObjectDeleteMarker": True,
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        "Status": "Enabled",
    } in rules


def test_the_inbox_bucket_still_expires_everything(synth: Synth) -> None:
    expiring = [rule for rule in _rules(synth, "DropFolderInbox") if "ExpirationInDays" in rule]
    assert expiring == [{"ExpirationInDays": 30, "Status": "Enabled"}]
