"""``comfyserve worker``: the cloud GPU worker — receives jobs from SQS and runs them until SIGTERM drains it.

Every setting comes from the environment (``--help`` lists them, from the settings model itself); see
docs/WORKER.md for IAM, the container and drain/Spot behaviour.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from comfyserve.commands.common import UsageError
from comfyserve.settings import CloudWorkerSettings


def settings_help() -> str:
    """One block per environment variable: name, type and default, then what it means."""
    lines = ["settings (environment variables):"]
    for variable, kind, default, description in CloudWorkerSettings.env_table():
        lines.append(f"  {variable}  ({kind}; {default})")
        lines += textwrap.wrap(description, 100, initial_indent="      ", subsequent_indent="      ")
    lines.append("AWS credentials and region come from boto3's usual chain; AWS_ENDPOINT_URL points it at an emulator.")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the cloud worker: jobs from SQS, results to S3 (settings from the environment)",
        description="Receive jobs from the SQS queue and run them until SIGTERM or SIGINT drains the worker.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--health",
        action="store_true",
        help="exit 0 if a worker with these settings is alive (its loop moved recently), else 1 (the image's"
        " health check)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = CloudWorkerSettings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.health:
        from comfyserve.worker.liveness import Liveness

        return 0 if Liveness(settings).healthy() else 1
    from comfyserve.worker.cloud import run_worker

    return run_worker(settings)
