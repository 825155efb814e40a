"""Executor overhead on chains of no-op nodes: a cold run (nothing cached) and the same prompt again (all cached).

Targets (issue 2): under 50 µs per node cold and under 5 µs per node cached on a 2,000-node chain; a 10,000-node
chain runs (no recursion), and the cost per node stays flat as the chain grows (linearity = per-node cost at
10,000 nodes / at 1,000). Each figure is the median over runs of wall time and of this process's CPU time (the
executor is single-threaded, so on a quiet machine they agree; on a shared one CPU time is the steadier).
``reference_loop_us`` times a bare Python loop doing one hash and a few dict operations per node, to compare
machines.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results
from comfyserve.engine.cache import OutputCache
from comfyserve.engine.context import RunContext
from comfyserve.engine.executor import Executor
from comfyserve.engine.registry import NodeRegistry

SIZES = {1_000: 15, 2_000: 15, 10_000: 5}


def chain(length: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "TestNoOp", "inputs": {"value": 1}}}
    for i in range(1, length):
        prompt[str(i)] = {"class_type": "TestNoOp", "inputs": {"value": [str(i - 1), 0]}, "_meta": {"title": "n"}}
    return prompt


def clocked(fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_node_us(samples: list[float], length: int) -> float:
    return round(statistics.median(samples) / length * 1e6, 3)


def measure(registry: NodeRegistry, context: RunContext, length: int, repeat: int) -> dict[str, float]:
    prompt = chain(length)
    outputs = [str(length - 1)]
    samples: dict[str, list[float]] = {"cold_wall": [], "cold_cpu": [], "cached_wall": [], "cached_cpu": []}
    for _ in range(repeat):
        executor = Executor(registry, OutputCache(max_entries=length * 2))

        def run(e: Executor = executor) -> None:
            e.execute(prompt, outputs, context=context)

        for phase in ("cold", "cached"):
            wall, cpu = clocked(run)
            samples[f"{phase}_wall"].append(wall)
            samples[f"{phase}_cpu"].append(cpu)
        result = executor.execute(prompt, outputs, context=context)
        assert result.status == "success" and not result.executed and len(result.cached) == length
    return {f"{name}_us_per_node": per_node_us(values, length) for name, values in samples.items()}


def reference_loop_us(length: int = 2_000, repeat: int = 15) -> float:
    """One blake2b and a handful of dict operations per node: a yardstick for the machine's speed."""
    prompt = chain(length)

    def loop() -> None:
        digests: dict[str, str] = {}
        for node_id, node in prompt.items():
            text = f"{node['class_type']!r}{node['inputs']['value']!r}"
            digests[node_id] = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    return per_node_us([clocked(loop)[1] for _ in range(repeat)], length)


def main() -> None:
    registry = NodeRegistry()
    registry.load_module("tests.testpack.basic")
    with tempfile.TemporaryDirectory() as tmp:
        context = RunContext(Path(tmp), Path(tmp), Path(tmp))
        figures: dict[str, Any] = {f"chain_{n}": measure(registry, context, n, repeat) for n, repeat in SIZES.items()}
    small, large = figures["chain_1000"], figures["chain_10000"]
    figures["linearity_10k_over_1k"] = {
        phase: round(large[f"{phase}_cpu_us_per_node"] / small[f"{phase}_cpu_us_per_node"], 3)
        for phase in ("cold", "cached")
    }
    figures["reference_loop_us_per_node"] = reference_loop_us()
    figures["targets"] = {"cold_us_per_node_2000": 50.0, "cached_us_per_node_2000": 5.0}
    write_results("executor", figures)


if __name__ == "__main__":
    main()
