"""Two syntheses per test session: ``python app.py`` in a subprocess, as CI runs it, with no AWS credentials and
no Docker (asset bundling skipped: the bundle has its own test). ``synth``: three GPU families and an alarm
address; ``single_synth``: the default one family (the scaler sizes its group) with the opt-ins (hot models,
Session Manager)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = "comfyserve"
CONTEXT = {
    "aws:cdk:bundling-stacks": [],
    "instance_families": "g5,g6,g6e",
    "alarm_email": "gpu-oncall@example.com",
    "max_workers": "6",
    "api_quota_per_day": "5000",
}
SINGLE_CONTEXT = {
    "aws:cdk:bundling-stacks": [],
    "hot_models": "checkpoints/sdxl.safetensors,loras/detail.safetensors",
    "ssm_access": "true",
}
_NO_AWS = ("AWS_", "CDK_DEFAULT_")


@dataclass(frozen=True)
class Synth:
    outdir: Path
    template: dict[str, Any]
    seconds: float

    @property
    def template_path(self) -> Path:
        return self.outdir / f"{STACK}.template.json"

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.template["Resources"].items() if r["Type"] == kind}


def synthesize(outdir: Path, context: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``python app.py`` with ``context``, no AWS credentials, into ``outdir``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(_NO_AWS)}
    env |= {
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps(context),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def _synth(outdir: Path, context: dict[str, Any]) -> Synth:
    started = time.monotonic()
    done = synthesize(outdir, context)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-4000:]
    template = json.loads((outdir / f"{STACK}.template.json").read_text(encoding="utf-8"))
    return Synth(outdir=outdir, template=template, seconds=seconds)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth(tmp_path_factory.mktemp("cdk.out"), CONTEXT)


@pytest.fixture(scope="session")
def single_synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return _synth(tmp_path_factory.mktemp("cdk.out.single"), SINGLE_CONTEXT)


@pytest.fixture(scope="session")
def template(synth: Synth) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synth.template)


def function_id(synth: Synth, handler: str) -> str:
    """The logical id of the Lambda function that runs ``lambdas/<handler>.py``."""
    (found,) = [
        name
        for name, resource in synth.resources("AWS::Lambda::Function").items()
        if resource["Properties"].get("Handler") == f"lambdas.{handler}.handler"
    ]
    return found


def only(synth: Synth, kind: str) -> tuple[str, dict[str, Any]]:
    """The one resource of ``kind``: its logical id and properties."""
    ((name, resource),) = synth.resources(kind).items()
    return name, resource["Properties"]


def role_statements(synth: Synth, role_id: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies attached to ``role_id``."""
    statements = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def actions_of(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def function_role(synth: Synth, handler: str) -> str:
    properties = synth.template["Resources"][function_id(synth, handler)]["Properties"]
    return str(properties["Role"]["Fn::GetAtt"][0])


def grants(synth: Synth, role_id: str, action: str) -> list[Any]:
    """The resources on which ``role_id`` may perform ``action`` (exact action names or CDK's wildcards)."""
    found: list[Any] = []
    for statement in role_statements(synth, role_id):
        if statement["Effect"] != "Allow":
            continue
        for pattern in actions_of(statement):
            if pattern == action or (pattern.endswith("*") and action.startswith(pattern[:-1])):
                resource = statement["Resource"]
                found += resource if isinstance(resource, list) else [resource]
    return found
