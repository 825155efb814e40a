"""``comfyserve validate FILE [--json]``: check a workflow against the node catalog (no torch needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from comfyserve.commands.common import read_workflow
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import ValidationResult, validate_prompt


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("validate", help="validate an API-format workflow against the node catalog")
    parser.add_argument("file", type=Path, help="workflow JSON (API format, or {'prompt': ...})")
    parser.add_argument("--json", action="store_true", help="print ComfyUI's {error, node_errors} result as JSON")
    parser.add_argument("--catalog", type=Path, help="an exported catalog (default: the packaged one)")
    parser.add_argument("--models", type=Path, help="check model file names against this models directory")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="accept a workflow whose valid outputs could run (ComfyUI's rule); by default every output must be valid",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prompt = read_workflow(args.file)
    catalog = Catalog.load(args.catalog) if args.catalog else Catalog.packaged()
    inventory = ModelInventory.scan(args.models) if args.models else None
    result = validate_prompt(prompt, catalog.specs, inventory=inventory, strict=not args.partial)
    if args.json:
        print(json.dumps({"ok": result.ok, "outputs": result.outputs, **result.response()}, indent=2))
    else:
        print(describe(result))
    return 0 if result.ok else 1


def describe(result: ValidationResult) -> str:
    """A human-readable account of a validation result, one line per problem."""
    lines = []
    if result.ok:
        lines.append(f"valid: outputs {', '.join(result.outputs)}")
    else:
        error = result.error or {}
        lines.append(
            f"invalid: {error.get('message', '')}" + (f" ({error['details']})" if error.get("details") else "")
        )
    for node_id, entry in result.node_errors.items():
        for err in entry["errors"]:
            lines.append(f"  node {node_id} ({entry['class_type']}): {err['type']}: {err['message']}: {err['details']}")
    return "\n".join(lines)
