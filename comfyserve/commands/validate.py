"""``comfyserve validate FILE [--json]``: check a workflow against the node catalog (no torch needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from comfyserve.commands.common import read_api_prompt
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.node_api import MODEL_FOLDER
from comfyserve.engine.validation import ValidationResult, validate_prompt


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("validate", help="validate a workflow against the node catalog")
    parser.add_argument("file", type=Path, help="workflow JSON (API format, {'prompt': ...}, or the editor's format)")
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
    catalog = Catalog.load(args.catalog) if args.catalog else Catalog.packaged()
    prompt = read_api_prompt(args.file, catalog.specs)
    inventory = ModelInventory.scan(args.models) if args.models else None
    result = validate_prompt(prompt, catalog.specs, inventory=inventory, strict=not args.partial)
    if args.json:
        print(json.dumps({"ok": result.ok, "outputs": result.outputs, **result.response()}, indent=2))
    else:
        print(describe(result))
    return 0 if result.ok else 1


MISSING_MODEL_FIX = (
    "give the folder that holds them with --models DIR (checkpoints/, loras/, vae/ ...), or write random-weight"
    " stand-ins with: comfyserve make-test-models DIR --for WORKFLOW.json"
)


def describe(result: ValidationResult) -> str:
    """A human-readable account of a validation result, one line per problem."""
    if not result.ok:
        return describe_invalid(result.error or {}, result.node_errors)
    lines = [f"valid: outputs {', '.join(result.outputs)}", *_node_lines(result.node_errors)]
    return "\n".join(lines)


def describe_invalid(error: dict[str, Any], node_errors: dict[str, Any], models_fix: str = MISSING_MODEL_FIX) -> str:
    """ComfyUI's ``{error, node_errors}`` as lines: the error, each node's problems, the fix for missing models."""
    details = f" ({error['details']})" if error.get("details") else ""
    lines = [f"invalid: {error.get('message', '')}{details}", *_node_lines(node_errors)]
    missing = missing_models(node_errors)
    if missing:
        lines.append(f"missing models: {', '.join(missing)}: {models_fix}")
    return "\n".join(lines)


def missing_models(node_errors: dict[str, Any]) -> list[str]:
    """``folder/name`` of each model file a node names that the models folder does not hold."""
    missing = []
    for entry in node_errors.values():
        for err in entry.get("errors", []):
            info = err.get("extra_info") or {}
            config = info.get("input_config") or []
            options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
            folder = options.get(MODEL_FOLDER)
            if err.get("type") == "value_not_in_list" and isinstance(folder, str):
                missing.append(f"{folder}/{info.get('received_value')}")
    return missing


def _node_lines(node_errors: dict[str, Any]) -> list[str]:
    return [
        f"  node {node_id} ({entry.get('class_type')}): {err['type']}: {err['message']}: {err.get('details', '')}"
        for node_id, entry in node_errors.items()
        for err in entry.get("errors", [])
    ]
