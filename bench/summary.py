"""The summary table that opens docs/PERFORMANCE.md: one row per target, with the measured figure, the peer it is
compared with and their ratio where the benchmark has one, whether the target is met, and the machine, all read
from bench/results/*.json."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Figure = Callable[[dict[str, Any]], float]


def at(path: str) -> Figure:
    """The figure at a dotted ``path`` of a benchmark's results."""

    def read(data: dict[str, Any]) -> float:
        value: Any = data
        for key in path.split("."):
            value = value[key]
        return float(value)

    return read


def _first_job(data: dict[str, Any]) -> float:
    return float(data["scenarios"][data["deployed_scenario"]]["first_job"]["p50_s"])


def _first_job_before(data: dict[str, Any]) -> float:
    return float(data["scenarios"]["stopped_unprepared_managed"]["first_job"]["p50_s"])


def _steady_requests(data: dict[str, Any]) -> float:
    return float(sum(data["submit"]["requests"]["steady_state"].values()))


def _minimum_requests(data: dict[str, Any]) -> float:
    return float(sum(data["submit"]["requests"]["minimum"].values()))


@dataclass(frozen=True)
class Row:
    """``measured`` must be ``compare``d (``<=`` or ``>=``) to ``limit``; with a peer, ``ratio`` (measured over
    peer) is what the limit applies to when ``on_ratio``."""

    label: str
    bench: str
    measured: Figure
    unit: str
    compare: str
    limit: float
    peer: tuple[str, Figure] | None = None
    on_ratio: bool = False


def ratio(label: str, bench: str, measured: str, unit: str, compare: str, limit: float, peer: str, of: str) -> Row:
    """A row whose target applies to the ratio of ``measured`` over the peer's figure at ``of``."""
    return Row(label, bench, at(measured), unit, compare, limit, (peer, at(of)), on_ratio=True)


ROWS = (
    Row("validate 100 nodes, p50", "validation", at("validate_100_nodes.p50_ms"), "ms", "<=", 1.0),
    Row("validate 2,000 nodes, p50", "validation", at("validate_2000_nodes.p50_ms"), "ms", "<=", 20.0),
    Row("import of the validation path, p50", "validation", at("import_validation_path.p50_ms"), "ms", "<=", 150),
    ratio(
        "`comfyserve validate` (100 nodes), p50",
        "cli_start",
        "comfyserve_validate_100_nodes.p50_ms",
        "ms",
        "<=",
        3.0,
        "`python -c pass`",
        "python_c_pass.p50_ms",
    ),
    Row("executor per node, cold (2,000 nodes)", "executor", at("chain_2000.cold_wall_us_per_node"), "µs", "<=", 50),
    Row("executor per node, cached", "executor", at("chain_2000.cached_wall_us_per_node"), "µs", "<=", 5),
    ratio(
        "txt2img 256², 20 steps, CPU",
        "txt2img_cpu",
        "comfyserve_best_s",
        "s",
        "<=",
        1.1,
        "diffusers' pipeline",
        "diffusers_best_s",
    ),
    ratio(
        "txt2img 512², 20 steps, GPU, batch 1",
        "txt2img_gpu",
        "batch_1.comfyserve.best_s",
        "s",
        "<=",
        1.1,
        "diffusers' pipeline",
        "batch_1.diffusers.best_s",
    ),
    Row("local stack submit, p50", "local_stack", at("submit_latency.p50_ms"), "ms", "<=", 5),
    Row("local stack submit, p99", "local_stack", at("submit_latency.p99_ms"), "ms", "<=", 25),
    Row("local stack end to end, 2 workers", "local_stack", at("throughput.end_to_end_per_s"), "jobs/s", ">=", 100),
    Row("warm worker overhead per job, p50", "worker_overhead", at("warm_overhead.p50_ms"), "ms", "<=", 30),
    Row(
        "AWS requests per submit, steady state (moto)",
        "aws_submit",
        _steady_requests,
        "",
        "<=",
        1.0,
        ("the minimum", _minimum_requests),
        on_ratio=True,
    ),
    ratio("EFS → NVMe model copy", "model_tiers", "efs_to_nvme_mib_s", "MiB/s", ">=", 0.9, "`cp`", "cp_mib_s"),
    ratio(
        "SDXL job, peak resident set, CPU",
        "sdxl_memory",
        "builtin.peak_gib",
        "GiB",
        "<=",
        1.0,
        "ComfyUI",
        "comfyui.peak_gib",
    ),
    Row("local edge under abuse, health p99", "edge_abuse", at("new.under_abuse.health.p99_ms"), "ms", "<=", 50),
    Row("local edge under abuse, connection resets", "edge_abuse", at("new.under_abuse.resets"), "", "<=", 0),
    ratio(
        "local edge submit p99, no abuse (median of interleaved runs)",
        "edge_abuse",
        "targets.submit_p99_quiet_median_ms.new",
        "ms",
        "<=",
        1.0,
        "the replaced server",
        "targets.submit_p99_quiet_median_ms.old",
    ),
    Row(
        "first job from zero, deployed default, p50 (simulated)",
        "scaling_sim",
        _first_job,
        "s",
        "<=",
        90,
        ("the stack before the preparation hook and the direct path", _first_job_before),
    ),
)
_OPERATORS = {"<=": operator.le, ">=": operator.ge}


def machine_text(data: dict[str, Any], bench: str) -> str:
    if bench == "scaling_sim":
        return "simulation (sourced timings, no AWS)"
    if "card" in data:
        return str(data["card"])
    return f"{data.get('machine', {}).get('cpus', '?')}-core CPU"


def _number(value: float) -> str:
    return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def summary_markdown(results: Path) -> str:
    lines = [
        "| figure | target | measured | peer | ratio | met | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        path = results / f"{row.bench}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        measured = row.measured(data)
        unit = f" {row.unit}" if row.unit else ""
        peer_text, ratio_text, value = "–", "–", measured
        if row.peer is not None:
            name, figure = row.peer
            peer = figure(data)
            ratio = measured / peer
            peer_text, ratio_text = f"{name}: {_number(peer)}{unit}", f"{ratio:.2f}×"
            value = ratio if row.on_ratio else measured
        limit = f"{_number(row.limit)}×" if row.on_ratio else f"{_number(row.limit)}{unit}"
        target = f"{'≤' if row.compare == '<=' else '≥'} {limit}"
        met = "yes" if _OPERATORS[row.compare](value, row.limit) else "**no**"
        lines.append(
            f"| {row.label} | {target} | {_number(measured)}{unit} | {peer_text} | {ratio_text} | {met} "
            f"| {machine_text(data, row.bench)} |"
        )
    return "\n".join(lines)
