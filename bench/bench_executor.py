"""Executor overhead on chains of no-op nodes: a cold run (nothing cached) and the same prompt again (all cached).

Targets (issue 2): under 50 µs per node cold and under 5 µs per node cached on a 2,000-node chain; a 10,000-node
chain runs (no recursion), and the cost per node stays flat as the chain grows (linearity = per-node cost at
10,000 nodes / at 1,000).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, timings, write_results
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


def per_node_us(samples: list[float], length: int) -> float:
    return round(percentile(samples, 0.5) / length * 1e6, 3)


def measure(registry: NodeRegistry, context: RunContext, length: int, repeat: int) -> dict[str, float]:
    prompt = chain(length)
    outputs = [str(length - 1)]
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(repeat):
        executor = Executor(registry, OutputCache(max_entries=length * 2))
        cold += timings(lambda e=executor: e.execute(prompt, outputs, context=context), 1)
        warm += timings(lambda e=executor: e.execute(prompt, outputs, context=context), 1)
        result = executor.execute(prompt, outputs, context=context)
        assert result.status == "success" and not result.executed and len(result.cached) == length
    return {"cold_us_per_node": per_node_us(cold, length), "cached_us_per_node": per_node_us(warm, length)}


def main() -> None:
    registry = NodeRegistry()
    registry.load_module("tests.testpack.basic")
    with tempfile.TemporaryDirectory() as tmp:
        context = RunContext(Path(tmp), Path(tmp), Path(tmp))
        figures: dict[str, Any] = {f"chain_{n}": measure(registry, context, n, repeat) for n, repeat in SIZES.items()}
    small, large = figures["chain_1000"], figures["chain_10000"]
    figures["linearity_10k_over_1k"] = {
        "cold": round(large["cold_us_per_node"] / small["cold_us_per_node"], 3),
        "cached": round(large["cached_us_per_node"] / small["cached_us_per_node"], 3),
    }
    figures["targets"] = {"cold_us_per_node_2000": 50.0, "cached_us_per_node_2000": 5.0}
    write_results("executor", figures)


if __name__ == "__main__":
    main()
