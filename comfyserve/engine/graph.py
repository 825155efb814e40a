"""The graph a prompt becomes at run time: the prompt plus ephemeral nodes from expansion
(:class:`DynamicPrompt`), and the bookkeeping of what waits on what (:class:`Scheduler`).

Every walk uses an explicit stack or queue, so a 10,000-node chain needs no recursion.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from comfyserve.engine.graph_utils import is_link


class GraphError(Exception):
    """The graph cannot run as given; ``node_id`` is the node the error is reported on."""

    def __init__(self, node_id: str, message: str) -> None:
        super().__init__(message)
        self.node_id = node_id


class DependencyCycleError(GraphError):
    def __init__(self, node_id: str, nodes: Iterable[str] = ()) -> None:
        super().__init__(node_id, "Dependency cycle detected")
        self.nodes = list(nodes)


class DuplicateNodeError(GraphError):
    pass


class ExpansionLimitError(GraphError):
    """Node expansion went past a cap (nesting depth or nodes created per job): a runaway loop."""


@dataclass(slots=True)
class NodeView:
    """A node's inputs sorted by name and split once per run into links and constants (read-only).
    ``strong`` lists the producers it needs before it runs: those of its non-lazy links."""

    node: dict[str, Any]
    class_type: str
    links: list[tuple[str, str, int]]  # (input name, producer id, output slot)
    constants: list[tuple[str, Any]]
    strong: tuple[str, ...]

    @classmethod
    def of(cls, node: dict[str, Any], lazy: frozenset[str] = frozenset()) -> NodeView:
        inputs = node.get("inputs") or {}
        links = []
        constants = []
        for name in sorted(inputs) if len(inputs) > 1 else inputs:
            value = inputs[name]
            if is_link(value):
                links.append((name, value[0], int(value[1])))
            else:
                constants.append((name, value))
        strong = tuple(producer for name, producer, _ in links if name not in lazy)
        return cls(node, str(node.get("class_type")), links, constants, strong)


class DynamicPrompt:
    """The original prompt plus the ephemeral nodes that expansions add during the run (ComfyUI's names)."""

    def __init__(self, prompt: dict[str, dict[str, Any]]) -> None:
        self.original_prompt = prompt
        self.ephemeral: dict[str, dict[str, Any]] = {}
        self._parent: dict[str, str] = {}
        self._display: dict[str, str] = {}

    def get_node(self, node_id: str) -> dict[str, Any]:
        node = self.original_prompt.get(node_id) or self.ephemeral.get(node_id)
        if node is None:
            raise GraphError(node_id, f"node {node_id!r} is not in the prompt")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.original_prompt or node_id in self.ephemeral

    def add_ephemeral_node(self, node_id: str, node: dict[str, Any], parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = node
        self._parent[node_id] = parent_id
        self._display[node_id] = display_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self._parent.get(node_id)

    def get_real_node_id(self, node_id: str) -> str:
        """The node of the original prompt this one descends from (itself for original nodes)."""
        while node_id in self._parent:
            node_id = self._parent[node_id]
        return node_id

    def get_display_node_id(self, node_id: str) -> str:
        while True:
            display = self._display.get(node_id)
            if display is None or display == node_id:
                return node_id
            node_id = display

    def all_node_ids(self) -> list[str]:
        return [*self.original_prompt, *self.ephemeral]

    def get_original_prompt(self) -> dict[str, dict[str, Any]]:
        return self.original_prompt


class Scheduler:
    """Nodes waiting to run, and the strong links that block them (ComfyUI's ``ExecutionList``).

    ``strong_links(n)`` lists the producers ``n`` needs before it can run (lazy inputs excluded);
    ``available(n)`` says whether ``n``'s outputs already exist; ``urgent(n)`` marks output and async nodes,
    which run first, then the nodes that feed them, then the rest (first come, first served in each tier).
    """

    def __init__(
        self,
        strong_links: Callable[[str], Iterable[str]],
        available: Callable[[str], bool],
        urgent: Callable[[str], bool],
    ) -> None:
        self._strong_links = strong_links
        self._available = available
        self._urgent = urgent
        self.pending: dict[str, None] = {}  # ordered set: added, not yet completed
        self._count: dict[str, int] = {}
        self._blocking: dict[str, dict[str, None]] = {}
        self._ready: tuple[deque[str], deque[str], deque[str]] = (deque(), deque(), deque())

    def add(self, node_id: str) -> None:
        """Schedule ``node_id`` and every producer it needs that is not available yet."""
        if node_id in self.pending:
            return
        self._admit(node_id)
        new = [node_id]
        stack = [node_id]
        while stack:
            consumer = stack.pop()
            for producer in self._strong_links(consumer):
                if self._available(producer):
                    continue
                if producer not in self.pending:
                    self._admit(producer)
                    new.append(producer)
                    stack.append(producer)
                self._block(producer, consumer)
        for nid in new:
            if self._count[nid] == 0:
                self._push(nid)

    def link(self, producer: str, consumer: str) -> None:
        """Make ``consumer`` wait for ``producer`` (a lazy input it asked for, or an expansion's result)."""
        if not self._available(producer):
            self.add(producer)
            self._block(producer, consumer)

    def pop(self) -> str | None:
        for tier in self._ready:
            while tier:
                node_id = tier.popleft()
                if node_id in self.pending:
                    return node_id
        return None

    def requeue(self, node_id: str) -> None:
        """Stage again a node that returned pending, once nothing blocks it."""
        if self._count[node_id] == 0:
            self._push(node_id)

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for consumer in self._blocking.pop(node_id, ()):
            if consumer in self.pending:
                self._count[consumer] -= 1
                if self._count[consumer] == 0:
                    self._push(consumer)

    def drop(self, node_id: str) -> list[str]:
        """Remove a failed node and everything that waits on it, transitively; returns the removed ids."""
        dropped: list[str] = []
        stack = [node_id]
        while stack:
            nid = stack.pop()
            if nid in self.pending:
                del self.pending[nid]
                dropped.append(nid)
                stack.extend(self._blocking.pop(nid, ()))
        return dropped

    def cycle(self) -> list[str]:
        """When nothing can run: the waiting nodes that are stuck on a cycle (dependents peeled off)."""
        waiting = {nid: [c for c in self._blocking.get(nid, ()) if c in self.pending] for nid in self.pending}
        producers: dict[str, list[str]] = {nid: [] for nid in waiting}
        for nid, consumers in waiting.items():
            for consumer in consumers:
                producers[consumer].append(nid)
        out_degree = {nid: len(consumers) for nid, consumers in waiting.items()}
        sinks = deque(nid for nid, degree in out_degree.items() if degree == 0)
        while sinks:
            nid = sinks.popleft()
            del out_degree[nid]
            for producer in producers[nid]:
                out_degree[producer] -= 1
                if out_degree[producer] == 0:
                    sinks.append(producer)
        return [nid for nid in self.pending if nid in out_degree]

    def _admit(self, node_id: str) -> None:
        self.pending[node_id] = None
        self._count[node_id] = 0

    def _block(self, producer: str, consumer: str) -> None:
        consumers = self._blocking.setdefault(producer, {})
        if consumer not in consumers:
            consumers[consumer] = None
            self._count[consumer] += 1

    def _push(self, node_id: str) -> None:
        urgent = self._urgent
        if urgent(node_id):
            self._ready[0].append(node_id)
            return
        for consumer in self._blocking.get(node_id, ()):
            if urgent(consumer):
                self._ready[1].append(node_id)
                return
        self._ready[2].append(node_id)
