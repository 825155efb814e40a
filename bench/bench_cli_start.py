"""Start-up cost of the ``comfyserve`` command: ``comfyserve validate`` on a 100-node workflow against
``python -c pass`` (the same interpreter), measured alternately in one run.

Target (issue 11): p50 of ``comfyserve validate`` within 3x of ``python -c pass``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_validation import chain
from bench.common import summary_ms, timings, write_results

REPEAT = 31
TARGET_RATIO = 3.0


def comfyserve_command() -> list[str]:
    """The installed console script beside this interpreter, else ``python -m comfyserve``."""
    script = Path(sys.executable).parent / "comfyserve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "comfyserve"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workflow = Path(tmp) / "chain100.json"
        workflow.write_text(json.dumps(chain(100)))
        validate = [*comfyserve_command(), "validate", str(workflow)]
        baseline = [sys.executable, "-c", "pass"]
        out = subprocess.run(validate, capture_output=True, text=True, check=True)
        assert out.stdout.startswith("valid: outputs out"), out.stdout
        base_samples: list[float] = []
        validate_samples: list[float] = []
        for _ in range(REPEAT):  # alternate, so both see the same machine load
            base_samples += timings(lambda: subprocess.run(baseline, check=True), 1)
            validate_samples += timings(lambda: subprocess.run(validate, check=True, capture_output=True), 1)
    base, cli = summary_ms(base_samples), summary_ms(validate_samples)
    figures = {
        "python_c_pass": base,
        "comfyserve_validate_100_nodes": cli,
        "ratio_p50": round(cli["p50_ms"] / base["p50_ms"], 2),
        "targets": {"ratio_p50": TARGET_RATIO},
    }
    write_results("cli_start", figures)


if __name__ == "__main__":
    main()
