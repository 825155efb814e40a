"""The synthesized template: `python app.py` needs no AWS or Docker, cfn-lint is clean, cdk-nag passes with
every acknowledgement carrying a reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.infra.conftest import ROOT, Synth

SYNTH_BUDGET_S = 120  # about 20 s on an idle CI core


def test_synth_without_aws_or_docker_is_quick(synth: Synth) -> None:
    assert synth.template_path.is_file()
    assert synth.seconds < SYNTH_BUDGET_S


def test_cfn_lint_has_no_errors_or_warnings(synth: Synth) -> None:
    lint = Path(sys.executable).with_name("cfn-lint")
    done = subprocess.run([str(lint), str(synth.template_path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_cdk_nag_ran_and_every_acknowledgement_has_a_reason(synth: Synth) -> None:
    # A violation fails the synth (the fixture asserts it succeeded; test_constructs shows a violation failing);
    # acknowledgements are written into the resources' Metadata.
    report = json.loads((synth.outdir / "validation-report.json").read_text(encoding="utf-8"))
    assert [plugin for plugin in report["pluginReports"] if plugin["conclusion"] != "success"] == []
    acknowledged: dict[str, set[str]] = {}
    for name, resource in synth.template["Resources"].items():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            acknowledged.setdefault(rule["id"], set()).add(name)
            assert len(rule["reason"]) > 40, rule
    assert {"AwsSolutions-APIG4", "AwsSolutions-ECS2", "AwsSolutions-SMG4", "AwsSolutions-L1"} <= set(acknowledged)
    # Only the REST API's methods are acknowledged for API-key-only callers.
    assert {synth.template["Resources"][n]["Type"] for n in acknowledged["AwsSolutions-APIG4"]} <= {
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Method",
        "AWS::ApiGateway::Resource",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
        "AWS::ApiGateway::Model",
        "AWS::ApiGateway::RequestValidator",
        "AWS::ApiGateway::GatewayResponse",
        "AWS::ApiGateway::UsagePlan",
        "AWS::ApiGateway::Account",
        "AWS::IAM::Role",
        "AWS::Lambda::Permission",
    }


def test_worker_image_builds_from_gpu_container_with_only_what_it_copies(synth: Synth) -> None:
    assets = json.loads((synth.outdir / "comfyserve.assets.json").read_text(encoding="utf-8"))
    ((image,),) = [list(assets["dockerImages"].values())]
    assert image["source"]["dockerFile"] == "gpu_container/Dockerfile"
    assert image["source"]["platform"] == "linux/amd64"
    context = synth.outdir / image["source"]["directory"]
    staged = sorted(path.name for path in context.iterdir())
    assert staged == ["README.md", "comfyserve", "gpu_container", "pyproject.toml"]
    assert not list(context.rglob("__pycache__"))


def test_checkovs_findings_are_acknowledged_in_the_template_with_reasons(synth: Synth) -> None:
    """checkov 3.3.30 reported 426 passed, 0 failed, 59 skipped on this template (docs/DEPLOY.md); it is not
    installed here, so this checks that the acknowledgements it reads are where they belong."""
    from infra.checkov import BY_TYPE

    skipped: dict[str, set[str]] = {}
    for name, resource in synth.template["Resources"].items():
        skips = resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
        assert all(len(skip["comment"]) > 30 for skip in skips), name
        skipped[name] = {skip["id"] for skip in skips}
        assert {check for check, _ in BY_TYPE.get(resource["Type"], ())} <= skipped[name], name
    (access_logs,) = [name for name in synth.resources("AWS::S3::Bucket") if name.startswith("AccessLogs")]
    assert skipped[access_logs] == {"CKV_AWS_18", "CKV_AWS_21"}
    (health,) = [
        n for n, m in synth.resources("AWS::ApiGateway::Method").items() if not m["Properties"]["ApiKeyRequired"]
    ]
    assert skipped[health] == {"CKV_AWS_59"}
