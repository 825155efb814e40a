"""cdk.json: every feature flag a current `cdk init` writes (aws-cdk-lib's recommended-feature-flags.json of the
installed version), and the cached look-ups that let `python app.py` synthesize without AWS."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import aws_cdk

from app import PLACEHOLDER_ENV, ROOT

CDK_JSON = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))


def _recommended_flags() -> dict[str, object]:
    (bundle,) = (Path(aws_cdk.__file__).parent / "_jsii").glob("aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(bundle) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        flags: dict[str, object] = json.load(member)
    return flags


def test_cdk_json_has_every_recommended_feature_flag_of_the_installed_aws_cdk_lib() -> None:
    flags = _recommended_flags()
    assert len(flags) > 50
    assert {name: CDK_JSON["context"].get(name) for name in flags} == flags
    assert CDK_JSON["context"]["@aws-cdk/aws-autoscaling:generateLaunchTemplateInsteadOfLaunchConfig"] is True


def test_cdk_json_caches_the_placeholder_accounts_look_ups() -> None:
    account, region = PLACEHOLDER_ENV.account, PLACEHOLDER_ENV.region
    context = CDK_JSON["context"]
    ami = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    assert context[f"ssm:account={account}:parameterName={ami}:region={region}"].startswith("ami-")
    assert context[f"availability-zones:account={account}:region={region}"][:2] == ["us-east-1a", "us-east-1b"]
    assert CDK_JSON["app"] == ".venv/bin/python app.py"
