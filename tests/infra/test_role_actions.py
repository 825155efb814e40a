"""Each role may do what the committed allow-list (role_actions.json) says, nothing more and nothing less: a new
grant is a reviewed change to that file. Roles are named by their logical id without CDK's hash suffix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.infra.conftest import Synth, actions_of

ALLOW_LIST = Path(__file__).with_name("role_actions.json")
_HASH = re.compile(r"[0-9A-F]{8}$")


def role_actions(template: dict[str, Any]) -> dict[str, list[str]]:
    """Role (logical id less its hash) -> the actions of its inline policies and the managed policies it has."""
    resources = template["Resources"]
    found: dict[str, set[str]] = {
        _HASH.sub("", name): set() for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"
    }
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for arn in resource["Properties"].get("ManagedPolicyArns", []):
            found[_HASH.sub("", name)].add("managed:" + json.dumps(arn).rsplit("/", 1)[-1].strip("\"]}'"))
    for policy in resources.values():
        if policy["Type"] != "AWS::IAM::Policy":
            continue
        for role in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                assert statement["Effect"] == "Allow"
                found[_HASH.sub("", role["Ref"])].update(actions_of(statement))
    return {role: sorted(actions) for role, actions in sorted(found.items())}


def test_every_role_has_exactly_the_committed_actions(synth: Synth, single_synth: Synth) -> None:
    allowed = json.loads(ALLOW_LIST.read_text(encoding="utf-8"))
    assert role_actions(synth.template) == allowed["three_families"]
    assert role_actions(single_synth.template) == allowed["one_family_hot_models_ssm"]


def test_the_allow_list_grants_no_deletes_or_scans_where_the_code_makes_none() -> None:
    allowed = json.loads(ALLOW_LIST.read_text(encoding="utf-8"))["three_families"]
    worker = allowed["WorkersTaskTaskRole"]
    assert {action for action in worker if action.startswith("dynamodb:")} == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
    }
    assert not [action for action in worker if action.startswith("s3:Delete")]
    for role, actions in allowed.items():
        assert "dynamodb:Scan" not in actions and "dynamodb:DeleteItem" not in actions, role
    for role in ("ScalingScalerFunctionServiceRole", "NotificationsCompletionFunctionServiceRole"):
        assert not [action for action in allowed[role] if action.startswith("s3:Delete")], role
