"""The edge stays light: validating real workflows against the packaged catalog imports no torch or numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPAT = ROOT / "tests" / "data" / "compat_workflows"

PROBE = """
import json, sys
from pathlib import Path
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.prompt_format import parse_workflow_document
from comfyserve.engine.validation import validate_prompt

catalog = Catalog.packaged()
empty = ModelInventory.from_listing({})
verdicts = {}
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    prompt = parse_workflow_document(path.read_bytes())
    plain = validate_prompt(prompt, catalog.specs)
    inventoried = validate_prompt(prompt, catalog.specs, inventory=empty)
    verdicts[path.name[:2]] = {
        "ok": plain.ok,
        "error": plain.error and plain.error["message"],
        "missing_models": sorted(
            (node_id, error["extra_info"].get("input_name"))
            for node_id, entry in inventoried.node_errors.items()
            for error in entry["errors"]
            if error["type"] == "value_not_in_list"
        ),
        "other_errors": sorted(
            error["type"]
            for entry in inventoried.node_errors.values()
            for error in entry["errors"]
            if error["type"] != "value_not_in_list"
        ),
    }
heavy = sorted(m for m in ("torch", "numpy", "diffusers", "transformers", "PIL") if m in sys.modules)
print(json.dumps({"verdicts": verdicts, "heavy": heavy}))
"""


def probe() -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(COMPAT)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


RESULT = probe()
VERDICTS: dict[str, dict[str, object]] = RESULT["verdicts"]  # type: ignore[assignment]


def test_validation_never_imports_heavy_modules() -> None:
    assert RESULT["heavy"] == []


def test_custom_node_workflows_name_the_unknown_node() -> None:
    assert VERDICTS["12"]["error"] == "Cannot execute because node ImageResize+ does not exist."
    assert VERDICTS["14"]["error"] == "Cannot execute because node SaveImageWebsocket does not exist."


def test_core_workflows_are_valid_and_only_model_files_are_missing() -> None:
    expected_missing = {
        "01": [("4", "ckpt_name")],
        "03": [("4", "ckpt_name")],
        "04": [("14", "ckpt_name")],
        "05": [("29", "ckpt_name")],
        "06": [("10", "lora_name"), ("4", "ckpt_name")],
        "07": [("11", "lora_name"), ("4", "ckpt_name")],
        "08": [("13", "model_name"), ("4", "ckpt_name")],
        "10": [("4", "ckpt_name")],
        "11": [("12", "control_net_name"), ("13", "vae_name"), ("14", "ckpt_name")],
    }
    for key, missing in expected_missing.items():
        verdict = VERDICTS[key]
        assert verdict["ok"] is True, (key, verdict)
        assert [tuple(pair) for pair in verdict["missing_models"]] == missing, key
        assert verdict["other_errors"] == [], key


HANDLER_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
heavy = sorted(m for m in ("torch", "numpy", "diffusers", "transformers", "safetensors") if m in sys.modules)
print(json.dumps(heavy))
"""
# Every handler module builds its clients at import (no request is sent): dummy resources are enough.
HANDLER_ENV = {
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "COMFYSERVE_BUCKET": "jobs",
    "COMFYSERVE_QUEUE_URL": "http://127.0.0.1:9/123456789012/jobs",
    "COMFYSERVE_TABLE": "jobs",
    "COMFYSERVE_EVENT_BUS": "comfyserve",
    "COMFYSERVE_INBOX_BUCKET": "inbox",
    "COMFYSERVE_ECS_CLUSTER": "workers",
    "COMFYSERVE_ECS_SERVICE": "workers",
    "COMFYSERVE_WEBHOOK_SECRET": "whsec_c2VjcmV0",
}


def test_the_event_lambdas_import_no_heavy_modules() -> None:
    handlers = ["lambdas.drop_folder", "lambdas.dead_letter", "lambdas.scaler", "lambdas.webhooks"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYSERVE_", "AWS_"))} | HANDLER_ENV
    out = subprocess.run(
        [sys.executable, "-c", HANDLER_PROBE, *handlers], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    assert json.loads(out.stdout) == []
