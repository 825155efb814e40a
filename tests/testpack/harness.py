"""Helpers for executor tests: the pack's registry, an event recorder and a one-call runner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyserve.engine.context import RunContext
from comfyserve.engine.executor import ExecutionResult, Executor
from comfyserve.engine.graph_utils import GraphBuilder, GraphNode
from comfyserve.engine.registry import NodeRegistry

PACK_MODULES = ("basic", "flow", "asyncnodes", "validation_variants")


def pack_registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in PACK_MODULES:
        registry.load_module(f"tests.testpack.{module}")
    assert not registry.failures, registry.failures
    return registry


@dataclass
class Recorder:
    """Collects ``(event, data)`` pairs as an ``on_event`` sink."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.events.append((name, data))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]

    def ran(self) -> set[str]:
        """Nodes that sent ``executing`` (what ComfyUI's tests count as "ran")."""
        return {d["node"] for d in self.of("executing") if d["node"] is not None}


def context(tmp: Path, **overrides: Any) -> RunContext:
    return RunContext(output_dir=tmp / "out", temp_dir=tmp / "temp", input_dir=tmp / "in", **overrides)


def run(
    executor: Executor,
    graph: GraphBuilder | dict[str, Any],
    outputs: Sequence[GraphNode | str],
    ctx: RunContext,
    **kwargs: Any,
) -> tuple[ExecutionResult, Recorder]:
    prompt = graph.finalize() if isinstance(graph, GraphBuilder) else graph
    recorder = Recorder()
    ids = [o.id if isinstance(o, GraphNode) else o for o in outputs]
    result = executor.execute(prompt, ids, context=ctx, prompt_id="p1", on_event=recorder, **kwargs)
    return result, recorder


def image(g: GraphBuilder, content: str = "WHITE", batch_size: int = 1) -> GraphNode:
    return g.node("StubImage", content=content, height=8, width=8, batch_size=batch_size)


def mask(g: GraphBuilder, value: float) -> GraphNode:
    return g.node("StubMask", value=value, height=8, width=8, batch_size=1)


def saved_values(result: ExecutionResult, node: GraphNode) -> list[float]:
    return [entry["value"] for entry in result.ui_outputs[node.id]["images"]]
