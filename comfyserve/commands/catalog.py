"""``comfyserve catalog``: the node catalog as JSON (the ``/object_info`` shape) on stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from comfyserve.engine.catalog import Catalog


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("catalog", help="print the node catalog (object_info JSON)")
    parser.add_argument("--custom-nodes", type=Path, action="append", default=[], help="a custom_nodes directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from comfyserve.nodes import builtin_registry

    registry = builtin_registry(custom_nodes=args.custom_nodes)
    for failure in registry.failures:
        print(f"comfyserve catalog: skipped node pack {failure.pack}: {failure.error}", file=sys.stderr)
    sys.stdout.write(Catalog.from_registry(registry).dumps())
    return 0
