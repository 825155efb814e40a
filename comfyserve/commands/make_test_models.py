"""``comfyserve make-test-models DIR [--for WORKFLOW.json ...] [--comfyui]``: write tiny random-weight model files
(with ``--comfyui``, in sizes ComfyUI loads too)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from comfyserve.commands.common import UsageError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "make-test-models",
        help="write tiny random-weight checkpoints, LoRAs and VAEs in the layouts real ones use",
    )
    parser.add_argument("directory", type=Path, help="models directory (files go to checkpoints/, loras/, vae/)")
    parser.add_argument(
        "--for",
        dest="workflows",
        type=Path,
        action="append",
        default=[],
        metavar="WORKFLOW.json",
        help="write the model files this API-format workflow names (repeatable); default: one of each kind",
    )
    parser.add_argument(
        "--comfyui",
        action="store_true",
        help="stand-ins ComfyUI loads too, so one set serves both backends (SD1.x only; about 640 MB a checkpoint)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from comfyserve.models.testmodels import make_test_models

    if args.directory.exists() and not args.directory.is_dir():
        raise UsageError(f"{args.directory} exists and is not a directory")
    for path in make_test_models(args.directory, args.workflows, comfyui=args.comfyui):
        print(path)
    return 0
