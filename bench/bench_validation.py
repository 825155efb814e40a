"""Validation speed on 100- and 2,000-node workflows, and the import cost of the validation path.

Targets (issue 2): p50 under 1 ms at 100 nodes and under 20 ms at 2,000; import under 150 ms without torch.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import summary_ms, timings, write_results
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.validation import Limits, validate_prompt

IMPORT_PROBE = """
import sys, time
start = time.perf_counter()
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.validation import validate_prompt
Catalog.packaged()
print(time.perf_counter() - start, 'torch' in sys.modules, 'numpy' in sys.modules)
"""


def chain(length: int) -> dict[str, Any]:
    """EmptyImage → ImageInvert × (length − 2) → SaveImage."""
    prompt: dict[str, Any] = {
        "0": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}}
    }
    for i in range(1, length - 1):
        prompt[str(i)] = {"class_type": "ImageInvert", "inputs": {"image": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "SaveImage", "inputs": {"images": [str(length - 2), 0], "filename_prefix": "b"}}
    return prompt


def main() -> None:
    catalog = Catalog.packaged()
    figures: dict[str, Any] = {}
    limits = Limits(max_nodes=None)
    for size, repeat in ((100, 2000), (2000, 200), (10_000, 20)):
        prompt = chain(size)
        assert validate_prompt(prompt, catalog.specs, limits=limits).ok
        samples = timings(partial(validate_prompt, prompt, catalog.specs, limits=limits), repeat)
        figures[f"validate_{size}_nodes"] = summary_ms(samples)
    imports = []
    for _ in range(7):
        out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True)
        seconds, torch_loaded, numpy_loaded = out.stdout.split()
        assert torch_loaded == "False" and numpy_loaded == "False", "the validation path imported torch or numpy"
        imports.append(float(seconds))
    figures["import_validation_path"] = summary_ms(imports)
    figures["targets"] = {"validate_100_p50_ms": 1.0, "validate_2000_p50_ms": 20.0, "import_p50_ms": 150.0}
    write_results("validation", figures)


if __name__ == "__main__":
    main()
