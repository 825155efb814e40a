"""The CDK app: ``npx aws-cdk deploy`` (cdk.json runs this file), or ``python app.py`` to synthesize alone.

Settings come from context (``-c name=value``, see infra/settings.py and docs/DEPLOY.md). Run directly, the
app reads cdk.json's context itself (as the CDK CLI would pass it), and with no account in the environment
(no credentials) it synthesizes for a placeholder account whose look-ups cdk.json caches, so a synth needs
neither AWS nor Docker.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from infra.settings import ConfigurationError, StackSettings
from infra.stack import ComfyServeStack

ROOT = Path(__file__).resolve().parent
# Synth without credentials targets this account and Region; cdk.json holds its cached look-ups.
PLACEHOLDER_ENV = cdk.Environment(account="123456789012", region="us-east-1")


def cdk_json_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]
    return context


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    """The app with its one stack; ``context`` adds to (and overrides) cdk.json's."""
    app = cdk.App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=account, region=region) if account and region else PLACEHOLDER_ENV
    settings = StackSettings.from_context(app.node)
    ComfyServeStack(
        app,
        settings.stack_name,
        settings=settings,
        env=env,
        description="comfyserve: ComfyUI workflows as jobs on GPU workers that scale from zero",
    )
    # Acknowledged findings are written into each resource's Metadata (cdk_nag.rules_to_suppress): an audit trail.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    return app


def main() -> int:
    """Synthesize; a setting the stack refuses is one line on stderr and exit status 2, not a traceback."""
    try:
        app = build_app(outdir=os.environ.get("CDK_OUTDIR") or str(ROOT / "cdk.out"))
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
