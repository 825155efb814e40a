"""Workers start fast: building the built-in registry imports torch at most, never diffusers or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from comfyserve.nodes import builtin_registry

registry = builtin_registry()
specs = registry.specs()  # what catalog building reads: every INPUT_TYPES
heavy = sorted(m for m in ("diffusers", "transformers") if m in sys.modules)
failures = [failure.pack for failure in registry.failures]
print(json.dumps({"has_loader": "CheckpointLoaderSimple" in specs, "failures": failures, "heavy": heavy}))
"""


def test_builtin_registry_does_not_import_diffusers_or_transformers() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout)
    assert result == {"has_loader": True, "failures": [], "heavy": []}
