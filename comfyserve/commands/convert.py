"""``comfyserve convert WORKFLOW [--catalog FILE]``: the API prompt an editor's (UI-format) workflow becomes.

Converted as ComfyUI's editor does, with the packaged catalog or an ``/object_info`` document (such as a
ComfyUI fleet's); an API-format file is printed as it is. The output can be diffed, validated or submitted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from comfyserve.commands.common import read_api_prompt
from comfyserve.engine.catalog import Catalog


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("convert", help="print the API prompt an editor's (UI-format) workflow becomes")
    parser.add_argument("file", type=Path, help="the workflow as ComfyUI's editor saves it")
    parser.add_argument("--catalog", type=Path, help="an /object_info document (default: the packaged catalog)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    catalog = Catalog.load(args.catalog) if args.catalog else Catalog.packaged()
    print(json.dumps(read_api_prompt(args.file, catalog.specs), indent=2))
    return 0
