"""Write docs/PERFORMANCE.md from the JSON figures in bench/results/ (run after the benchmarks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.summary import summary_markdown

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "PERFORMANCE.md"

INTRO = """# Performance

Latest figures from the benchmarks in `bench/` (`make bench` runs them; `python bench/report.py` rewrites
this page from `bench/results/*.json`). These are measurements, not timed tests: the machines are noisy, so
compare against a peer measured in the same run (ratios) where a benchmark has one. Each section names the
machine its figures came from: the CPU figures were taken on a 2-core development machine that was running
other work at the same time (load average 1 to 3); the GPU figures name their card.

The local edge under abuse (`edge_abuse`, beside the server it replaced in the same run): health p99 under
50 ms and no connection reset for 60 well-behaved clients while idle keep-alive clients, half-sent bodies,
4.6 MB nested bodies and fragmented websockets run; submit p99 no worse than the replaced server's without
abuse (both servers up at once, their quiet runs interleaved, the median p99 of three compared); the server's
memory within the body limit times the requests in flight (10 MiB x 128). `old.*` is the
replaced server (`http.server`, one lock around the route table), `new.*` this one; `server_choice_quiet`
compares three ASGI servers on the same application.

`template_coverage` counts the official templates and public example workflows that run end to end on the
built-in engine, before and after issue 18; its method and ranking are in docs/COMFYUI_SUITE.md ("Template
coverage"), one line per workflow in `bench/results/template_coverage.details.jsonl`.

## Summary

Each target with its latest figure, the peer measured beside it and their ratio where the benchmark has one
(the target then applies to the ratio), and the machine. The detailed figures of every benchmark follow.
"""


def flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += flatten(f"{prefix}.{key}" if prefix else key, inner)
        return rows
    return [(prefix, value)]


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    machine = data.pop("machine", {})
    lines = [f"## {path.stem}", "", f"Machine: `{json.dumps(machine, sort_keys=True)}`", ""]
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in flatten("", data)]
    return "\n".join(lines) + "\n"


def main() -> None:
    sections = [section(path) for path in sorted(RESULTS.glob("*.json"))]
    OUT.write_text(INTRO + summary_markdown(RESULTS) + "\n\n" + "\n".join(sections))
    print(f"wrote {OUT} ({len(sections)} benchmarks)")


if __name__ == "__main__":
    main()
