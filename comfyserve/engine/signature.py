"""Input signatures, the output cache's keys (reference §1.4), computed incrementally.

A node's digest hashes its class, its ``IS_CHANGED`` value, its id when the class asks for that
(``NOT_IDEMPOTENT`` or a hidden ``UNIQUE_ID``), and every input by sorted name: a constant's canonical text, or
the producer's digest and output slot. Each digest is computed once from its producers' digests, so the cost
is linear in the graph, and two identical sub-graphs share keys (as in ComfyUI). ``None`` means "never a hit":
an unhashable or NaN constant, an ``IS_CHANGED`` that returned NaN or raised, or such a producer upstream.
The text is ``repr(class)``, then per part a NUL and: the ``IS_CHANGED`` text (the first part, possibly
empty), ``repr(node_id)``, and ``repr(name)`` followed by ``=constant`` or ``@digest:slot``. No part holds a
NUL (every text part is ``repr``-escaped; digests are hex), so the encoding is injective and distinct inputs
cannot share a key. The key is its BLAKE2b-128 digest, resumed from the class's precomputed hash state
(``NodePlan.signature_head``), which gives the same digest as hashing the whole text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from comfyserve.engine.graph import DependencyCycleError, DynamicPrompt, GraphError
from comfyserve.engine.graph_utils import is_link
from comfyserve.engine.plan import NodePlan, only, slice_calls
from comfyserve.engine.prompt_format import unwrap_literal

_SCALARS = (str, int, bool, type(None))
_CONTAINERS = (list, tuple, dict)
_SLOTS = (int, float)  # is_link: a link is [node_id: str, slot: int | float]


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
    """Digests (and plans) of the nodes of one run.

    ``plan_of(node_id, class_type)`` resolves a class (raising :class:`GraphError` for an unknown one);
    ``hidden(node_id, plan)`` supplies hidden inputs for ``IS_CHANGED``.
    """

    def __init__(
        self,
        dynprompt: DynamicPrompt,
        plan_of: Callable[[str, str], NodePlan],
        hidden: Callable[[str, NodePlan], dict[str, list[Any]]],
    ) -> None:
        self.digests: dict[str, str | None] = {}
        self.plans: dict[str, NodePlan] = {}
        self._dynprompt = dynprompt
        self._plan_of = plan_of
        self._hidden = hidden
        self._expanded: set[str] = set()  # nodes whose producers were pushed (on the stack = being hashed)
        self._class_plans: dict[Any, NodePlan] = {}

    async def ensure(self, roots: Iterable[str]) -> None:
        """Compute the digests of ``roots`` and of all their producers (lazy inputs included).

        A depth-first walk with an explicit stack. A node is expanded (its producers pushed) once; when it is
        on top again its producers are done, unless they wait on it: a cycle, found when its digest is made.
        This runs for every node of every prompt (a fully cached run is little else), so ``is_link``, the
        digest and the method lookups are inlined.
        """
        digests = self.digests
        plans = self.plans
        class_plans = self._class_plans
        expand = self._expanded.add
        expanded = self._expanded
        node_of = self._dynprompt.original_prompt.get
        for root in roots:
            stack = [root]
            push = stack.append
            pop = stack.pop
            while stack:
                node_id = stack[-1]
                if node_id in digests:
                    pop()
                    continue
                node = node_of(node_id) or self._node(node_id, stack)
                inputs = node.get("inputs") or {}
                if node_id not in expanded:
                    expand(node_id)
                    depth = len(stack)
                    for value in inputs.values():
                        if (
                            type(value) is list
                            and len(value) == 2
                            and type(value[0]) is str
                            and type(value[1]) in _SLOTS
                            and value[0] not in digests
                        ):
                            push(value[0])
                    if len(stack) > depth:
                        continue
                pop()
                class_type = node.get("class_type")
                plan = class_plans.get(class_type)
                if plan is None:
                    plan = class_plans[class_type] = self._plan_of(node_id, str(class_type))
                plans[node_id] = plan
                text: str | None = ""
                if plan.is_changed is not None or "is_changed" in node:
                    text = await self._is_changed(node_id, node, plan)
                if text is not None and plan.keyed_by_id:
                    text = f"{text}\x00{node_id!r}"
                quoted = plan.quoted_inputs
                try:
                    for name in sorted(inputs) if len(inputs) > 1 else inputs:
                        if text is None:
                            break
                        value = inputs[name]
                        kind = type(value)
                        if kind is list and len(value) == 2 and type(value[0]) is str and type(value[1]) in _SLOTS:
                            upstream = digests[value[0]]
                            if upstream is None:
                                text = None
                            else:
                                text = f"{text}\x00{quoted.get(name) or repr(name)}@{upstream}:{value[1]}"
                        elif kind is int or kind is str:
                            text = f"{text}\x00{quoted.get(name) or repr(name)}={value!r}"
                        else:
                            constant = encode_constant(value)
                            if constant is None:
                                text = None
                            else:
                                text = f"{text}\x00{quoted.get(name) or repr(name)}={constant}"
                except KeyError:  # a producer without a digest: it waits on this node
                    raise DependencyCycleError(node_id, [n for n in stack if n not in digests]) from None
                except ValueError:  # a number without a text form (over Python's digit limit)
                    text = None
                if text is None:
                    digests[node_id] = None
                else:
                    hasher = plan.signature_head.copy()
                    hasher.update(text.encode())
                    digests[node_id] = hasher.hexdigest()

    def _node(self, node_id: str, stack: list[str]) -> dict[str, Any]:
        """A node of the dynamic prompt; a missing one is reported on the node that links to it."""
        if self._dynprompt.has_node(node_id):
            return self._dynprompt.get_node(node_id)
        consumer = stack[-2] if len(stack) > 1 else node_id
        raise GraphError(consumer, f"node {consumer} links to node {node_id!r}, which does not exist")

    async def _is_changed(self, node_id: str, node: dict[str, Any], plan: NodePlan) -> str | None:
        """``IS_CHANGED`` with constants only (links are ``None``), list-mapped; a client-supplied
        ``is_changed`` wins. An exception counts as NaN."""
        if "is_changed" in node:
            return encode_constant(node["is_changed"])
        assert plan.is_changed is not None
        kwargs: dict[str, list[Any]] = {}
        for name, value in (node.get("inputs") or {}).items():
            if is_link(value):
                kwargs[name] = [None]
            elif name in plan.declared:
                kwargs[name] = [unwrap_literal(value)]
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
