"""The summary table that opens docs/PERFORMANCE.md: read from bench/results/, each target judged on the right
figure (the ratio where there is a peer), and the committed page carrying the table of the committed results."""

from __future__ import annotations

import json
from pathlib import Path

from bench.summary import summary_markdown

ROOT = Path(__file__).resolve().parents[2]


def _write(folder: Path, name: str, data: dict[str, object]) -> None:
    (folder / f"{name}.json").write_text(json.dumps({"machine": {"cpus": 2}, **data}))


def test_targets_are_judged_on_the_measured_figure_or_the_ratio(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "validation",
        {
            "validate_100_nodes": {"p50_ms": 1.5},
            "validate_2000_nodes": {"p50_ms": 20.0},
            "import_validation_path": {"p50_ms": 149.0},
        },
    )
    _write(
        tmp_path,
        "txt2img_gpu",
        {"card": "NVIDIA L4", "batch_1": {"comfyserve": {"best_s": 2.0}, "diffusers": {"best_s": 2.0}}},
    )
    _write(tmp_path, "model_tiers", {"efs_to_nvme_mib_s": 80.0, "cp_mib_s": 100.0})

    lines = summary_markdown(tmp_path).splitlines()

    assert lines[0] == "| figure | target | measured | peer | ratio | met | machine |"
    assert lines[2:] == [
        "| validate 100 nodes, p50 | ≤ 1 ms | 1.5 ms | – | – | **no** | 2-core CPU |",
        "| validate 2,000 nodes, p50 | ≤ 20 ms | 20 ms | – | – | yes | 2-core CPU |",
        "| import of the validation path, p50 | ≤ 150 ms | 149 ms | – | – | yes | 2-core CPU |",
        "| txt2img 512², 20 steps, GPU, batch 1 | ≤ 1.1× | 2 s | diffusers' pipeline: 2 s | 1.00× | yes | NVIDIA L4 |",
        "| EFS → NVMe model copy | ≥ 0.9× | 80 MiB/s | `cp`: 100 MiB/s | 0.80× | **no** | 2-core CPU |",
    ]  # benchmarks without results (the rest) have no row


def test_the_performance_page_opens_with_the_summary_of_the_committed_results() -> None:
    page = (ROOT / "docs" / "PERFORMANCE.md").read_text()
    summary = summary_markdown(ROOT / "bench" / "results")
    assert page.index("## Summary") < page.index(summary) < page.index("\n## ", page.index("## Summary") + 1)
