"""``comfyserve tenants`` against moto's API Gateway and CloudFormation (server mode, loopback): the stack's usage
plan found through its ``UsagePlanId`` output, a key created, attached and printed once, listed, revoked."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from comfyserve.cli import main
from tests.integration.conftest import AwsClients


@dataclass
class Deployment:
    stack: str
    plan_id: str
    plan_name: str
    apigw: Any


@pytest.fixture
def deployment(aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Deployment:
    """A usage plan, and a stack whose ``UsagePlanId`` output names it (as infra/stack.py's does)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for name in ("COMFYSERVE_USAGE_PLAN", "COMFYSERVE_STACK_NAME"):
        monkeypatch.delenv(name, raising=False)
    apigw = aws_clients.client("apigateway")
    suffix = uuid.uuid4().hex[:8]
    plan = apigw.create_usage_plan(name=f"plan-{suffix}")
    template = {
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"UsagePlanId": {"Value": plan["id"]}},
    }
    stack = f"comfyserve-{suffix}"
    aws_clients.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    monkeypatch.setenv("COMFYSERVE_STACK_NAME", stack)
    return Deployment(stack, plan["id"], plan["name"], apigw)


def test_add_prints_the_key_once_and_puts_it_on_the_stacks_plan(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tenants", "add", "acme"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert out == f"{key}\n" and len(key) >= 20  # the key alone on stdout
    apigw = deployment.apigw
    [on_plan] = apigw.get_usage_plan_keys(usagePlanId=deployment.plan_id)["items"]
    stored = apigw.get_api_key(apiKey=on_plan["id"], includeValue=True)
    assert (stored["name"], stored["enabled"], stored["value"]) == ("acme", True, key)
    assert err == (
        f"tenant acme: key id {on_plan['id']} (its tenant id) on usage plan {deployment.plan_id}"
        f" ({deployment.plan_name}); the key follows, shown this once\n"
    )

    assert main(["tenants", "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[:2] == [
        f"# usage plan {deployment.plan_id} ({deployment.plan_name})",
        "name\tkey id\tenabled\tcreated",
    ]
    assert [line.split("\t")[:3] for line in listing[2:]] == [["acme", on_plan["id"], "yes"]]
    assert key not in "\n".join(listing)  # the key is never printed again


def test_a_name_taken_on_the_plan_is_refused_and_no_key_is_made(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tenants", "add", "acme"]) == 0
    capsys.readouterr()
    before = len(deployment.apigw.get_api_keys()["items"])

    assert main(["tenants", "add", "acme"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"comfyserve tenants: tenant 'acme' already has a key on usage plan {deployment.plan_id} (")
    assert len(deployment.apigw.get_api_keys()["items"]) == before


def test_revoke_deletes_the_key_and_an_unknown_name_is_refused(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tenants", "add", "acme"]) == 0
    assert main(["tenants", "add", "globex"]) == 0
    capsys.readouterr()
    on_plan = {k["name"]: k["id"] for k in _plan_keys(deployment)}

    assert main(["tenants", "revoke", "acme"]) == 0
    assert capsys.readouterr().out == f"revoked tenant acme: key {on_plan['acme']} deleted\n"
    assert {k["name"]: k["id"] for k in _plan_keys(deployment)} == {"globex": on_plan["globex"]}
    all_keys = [k["id"] for k in deployment.apigw.get_api_keys()["items"]]
    assert on_plan["acme"] not in all_keys and on_plan["globex"] in all_keys

    assert main(["tenants", "revoke", "acme"]) == 2
    assert capsys.readouterr().err == (
        f"comfyserve tenants: no tenant 'acme' on usage plan {deployment.plan_id} ({deployment.plan_name})\n"
    )


def test_a_named_plan_is_used_and_an_unknown_one_or_stack_is_refused(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    other = deployment.apigw.create_usage_plan(name=f"gold-{uuid.uuid4().hex[:6]}")

    assert main(["tenants", "add", "initech", "--plan", other["name"]]) == 0
    capsys.readouterr()
    [on_gold] = deployment.apigw.get_usage_plan_keys(usagePlanId=other["id"])["items"]
    assert on_gold["name"] == "initech"
    assert deployment.apigw.get_usage_plan_keys(usagePlanId=deployment.plan_id)["items"] == []

    keys_before = len(deployment.apigw.get_api_keys()["items"])
    assert main(["tenants", "add", "hooli", "--plan", "no-such-plan"]) == 2
    assert capsys.readouterr().err == "comfyserve tenants: no usage plan 'no-such-plan' (an id or a name)\n"

    monkeypatch.setenv("COMFYSERVE_STACK_NAME", "not-deployed")
    assert main(["tenants", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("comfyserve tenants: stack 'not-deployed': ValidationError: ")
    assert err.endswith("(set COMFYSERVE_STACK_NAME, or name the plan with --plan)\n")
    assert len(deployment.apigw.get_api_keys()["items"]) == keys_before


def _plan_keys(deployment: Deployment) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = deployment.apigw.get_usage_plan_keys(usagePlanId=deployment.plan_id)["items"]
    return keys
