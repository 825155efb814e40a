"""Input signatures, the output cache's keys (reference §1.4), computed incrementally.

A node's digest hashes its class, its ``IS_CHANGED`` value, its id when the class asks for that
(``NOT_IDEMPOTENT`` or a hidden ``UNIQUE_ID``), and every input by sorted name: a constant's canonical text, or
the producer's digest and output slot. Each digest is computed once from its producers' digests, so the cost
is linear in the graph, and two identical sub-graphs share keys (as in ComfyUI). ``None`` means "never a hit":
an unhashable or NaN constant, an ``IS_CHANGED`` that returned NaN or raised, or such a producer upstream.
The encoding is injective (every text part is ``repr``-escaped), so distinct inputs cannot share a key.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from comfyserve.engine.graph import DependencyCycleError, DynamicPrompt, GraphError, NodeView
from comfyserve.engine.plan import NodePlan, only, slice_calls
from comfyserve.engine.prompt_format import unwrap_literal

_SCALARS = (str, int, bool, type(None))
_CONTAINERS = (list, tuple, dict)


def encode_constant(value: Any) -> str | None:
    """Canonical text for a JSON-like constant; ``None`` for anything that cannot be compared reliably."""
    kind = type(value)
    if kind in _SCALARS:
        return repr(value)
    if kind is float:
        return None if value != value else repr(value)
    if kind not in _CONTAINERS:
        return None
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float:
            if item != item:
                return None
        elif kind not in _SCALARS:
            return None
    return repr(value)


class Signatures:
    """Digests of the nodes of one run.

    ``view_of(node_id)`` gives a node's inputs and plan (raising :class:`GraphError` for an unknown class);
    ``hidden(node_id, plan)`` supplies hidden inputs for ``IS_CHANGED``.
    """

    def __init__(
        self,
        dynprompt: DynamicPrompt,
        view_of: Callable[[str], tuple[NodeView, NodePlan]],
        hidden: Callable[[str, NodePlan], dict[str, list[Any]]],
    ) -> None:
        self.digests: dict[str, str | None] = {}
        self._dynprompt = dynprompt
        self._view_of = view_of
        self._hidden = hidden

    async def ensure(self, roots: Iterable[str]) -> None:
        """Compute the digests of ``roots`` and of all their producers (lazy inputs included)."""
        digests = self.digests
        has_node = self._dynprompt.has_node
        view_of = self._view_of
        expanded: set[str] = set()
        for root in roots:
            stack = [root]
            while stack:
                node_id = stack[-1]
                if node_id in digests:
                    stack.pop()
                    continue
                view, plan = view_of(node_id)
                waiting = False
                for _, producer, _ in view.links:
                    if producer not in digests:
                        if producer in expanded:
                            raise DependencyCycleError(producer, [n for n in stack if n in expanded])
                        if not has_node(producer):
                            raise GraphError(
                                node_id, f"node {node_id} links to node {producer!r}, which does not exist"
                            )
                        stack.append(producer)
                        waiting = True
                if waiting:
                    expanded.add(node_id)
                    continue
                stack.pop()
                changed: str | None = ""
                if plan.is_changed is not None or "is_changed" in view.node:
                    changed = await self._is_changed(node_id, view, plan)
                digests[node_id] = None if changed is None else self._digest(node_id, view, plan, changed)

    def _digest(self, node_id: str, view: NodeView, plan: NodePlan, changed: str) -> str | None:
        digests = self.digests
        parts = [repr(view.class_type), changed]
        if plan.keyed_by_id:
            parts.append(repr(node_id))
        for name, value in view.constants:
            text = encode_constant(value)
            if text is None:
                return None
            parts.append(f"{name!r}={text}")
        for name, producer, slot in view.links:
            upstream = digests[producer]
            if upstream is None:
                return None
            parts.append(f"{name!r}@{upstream}:{slot}")
        return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).hexdigest()

    async def _is_changed(self, node_id: str, view: NodeView, plan: NodePlan) -> str | None:
        """``IS_CHANGED`` with constants only (links are ``None``), list-mapped; a client-supplied
        ``is_changed`` wins. An exception counts as NaN."""
        if "is_changed" in view.node:
            return encode_constant(view.node["is_changed"])
        assert plan.is_changed is not None
        kwargs: dict[str, list[Any]] = {name: [None] for name, _, _ in view.links}
        kwargs.update((name, [unwrap_literal(value)]) for name, value in view.constants if name in plan.declared)
        kwargs.update(self._hidden(node_id, plan))
        results = []
        try:
            for call in slice_calls(kwargs, plan.input_is_list):
                result = plan.is_changed(**only(call, plan.is_changed_params))
                if inspect.isawaitable(result):
                    result = await result
                results.append(result)
        except Exception:
            return None
        return encode_constant(results)
