"""``comfyserve catalog``: the node catalog as JSON (the ``/object_info`` shape) on stdout.

``--from-comfyui DIR`` exports what a ComfyUI checkout serves instead (it is started for the purpose, with the
models of ``--models`` and the custom nodes of ``--custom-nodes``): the catalog an image with ComfyUI carries.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from comfyserve.engine.catalog import Catalog


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("catalog", help="print the node catalog (object_info JSON)")
    parser.add_argument("--custom-nodes", type=Path, action="append", default=[], help="a custom_nodes directory")
    parser.add_argument("--from-comfyui", type=Path, metavar="DIR", help="export what this ComfyUI checkout serves")
    parser.add_argument("--comfyui-python", type=Path, help="the Python that runs it (default: its venv)")
    parser.add_argument("--models", type=Path, help="with --from-comfyui: the model root ComfyUI lists")
    parser.add_argument("--allow", type=Path, help="with --from-comfyui: node classes to keep, one a line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.from_comfyui is not None:
        from comfyserve.commands.comfyui import export_from_comfyui

        return export_from_comfyui(args)
    from comfyserve.nodes import builtin_registry

    registry = builtin_registry(custom_nodes=args.custom_nodes)
    for failure in registry.failures:
        print(f"comfyserve catalog: skipped node pack {failure.pack}: {failure.error}", file=sys.stderr)
    sys.stdout.write(Catalog.from_registry(registry).dumps())
    return 0
