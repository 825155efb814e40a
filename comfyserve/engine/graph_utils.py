"""Flow control for node authors, as ComfyUI's ``comfy_execution.graph_utils``: links, ``ExecutionBlocker``
and ``GraphBuilder`` for node expansion (a node returning ``{"result": ..., "expand": graph}``).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from comfyserve.engine.prompt_format import is_link

__all__ = ["CURRENT_CALL", "ExecutionBlocker", "GraphBuilder", "GraphNode", "NodeCall", "is_link"]


class ExecutionBlocker:
    """Returned as a node's result (or one output value, or one list element) it stops the nodes that consume
    it: their calls are skipped and their outputs become blockers too. A message is reported as an
    ``execution_error`` of type ``ExecutionBlocked`` without failing the prompt; ``None`` blocks silently."""

    __slots__ = ("message",)

    def __init__(self, message: str | None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


@dataclass(slots=True)
class NodeCall:
    """The node call in progress (set by the executor around every call of a node function)."""

    node_id: str
    display_id: str
    index: int
    graphs: int = 0


CURRENT_CALL: contextvars.ContextVar[NodeCall | None] = contextvars.ContextVar("comfyserve_call", default=None)


class GraphNode:
    """One node of an expansion graph; ``out(i)`` is a link to its output ``i``."""

    def __init__(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> None:
        self.id = node_id
        self.class_type = class_type
        self.inputs = inputs
        self.override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set an input; ``None`` removes it."""
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, display_id: str) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        """The prompt entry; its ``inputs`` is this node's own dict, as in ComfyUI (later edits show)."""
        node: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            node["override_display_id"] = self.override_display_id
        return node


class GraphBuilder:
    """Builds an expansion graph whose node ids are unique and deterministic.

    Inside a node call the default prefix is ``"<node id>.<call index>.<graph index>."``, as in ComfyUI, so
    expanding the same node twice never collides and a re-run yields the same ids (and cache hits).
    """

    def __init__(self, prefix: str | None = None) -> None:
        if prefix is None:
            call = CURRENT_CALL.get()
            if call is None:
                prefix = ""
            else:
                prefix = f"{call.node_id}.{call.index}.{call.graphs}."
                call.graphs += 1
        self.prefix = prefix
        self.nodes: dict[str, GraphNode] = {}
        self._counter = 0

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> GraphNode:
        if id is None:
            id = str(self._counter)
            self._counter += 1
        full_id = self.prefix + id
        node = self.nodes.get(full_id)
        if node is None:
            node = self.nodes[full_id] = GraphNode(full_id, class_type, {})
        for key, value in inputs.items():
            node.set_input(key, value)
        return node

    def lookup_node(self, node_id: str) -> GraphNode | None:
        return self.nodes.get(self.prefix + node_id)

    def remove_node(self, node_id: str) -> None:
        del self.nodes[self.prefix + node_id]

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}
