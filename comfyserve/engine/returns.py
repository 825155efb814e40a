"""A node's return values (reference §1.7): the styles ComfyUI accepts, blockers among the arguments, and the
merging of list-mapped calls into one list per output slot."""

from __future__ import annotations

import asyncio
from typing import Any

from comfyserve.engine.graph_utils import ExecutionBlocker, is_link
from comfyserve.engine.plan import NodePlan

Returns = tuple[Any, ...]
Part = tuple[bool, Returns]  # (from an expansion, so links stand for values; the returned values)


def find_blocker(kwargs: dict[str, Any], input_is_list: bool) -> ExecutionBlocker | None:
    """The blocker among a call's arguments (among their items for ``INPUT_IS_LIST``), if any."""
    if input_is_list:
        return next((v for values in kwargs.values() for v in values if isinstance(v, ExecutionBlocker)), None)
    for value in kwargs.values():
        if isinstance(value, ExecutionBlocker):
            return value
    return None


def result_of(call: Any) -> Any:
    """A call's return value, awaited already when it was a task."""
    return call.result() if isinstance(call, asyncio.Task) else call


def as_returns(returned: Any, plan: NodePlan) -> Returns:
    """A call's output values: a tuple (or list), a blocker for every output, or nothing."""
    if isinstance(returned, ExecutionBlocker):
        return (returned,) * len(plan.output_is_list)
    if isinstance(returned, tuple | list):
        return tuple(returned)
    if returned is None and not plan.output_is_list:
        return ()
    raise TypeError(
        f"{plan.name}.{plan.function} returned {type(returned).__name__}; expected a tuple of "
        f"{len(plan.output_is_list)} output(s) or a dict with 'result' and/or 'ui'"
    )


def merge_ui(uis: list[dict[str, Any]]) -> dict[str, Any] | None:
    """UI dicts of list-mapped calls merged key by key, their lists concatenated."""
    if len(uis) <= 1:
        return uis[0] if uis else None
    merged: dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list | tuple) else [value])
    return merged


def merge_outputs(parts: list[Part], plan: NodePlan, values: dict[str, list[list[Any]]]) -> list[list[Any]]:
    """One list per output slot: each call's value, or its items for an ``OUTPUT_IS_LIST`` slot. In an
    expansion's result a link stands for every value its node produced (``values`` holds them)."""
    if not parts:
        return []
    width = len(parts[0][1])
    merged: list[list[Any]] = [[] for _ in range(width)]
    list_slots = plan.output_is_list
    for is_graph, returns in parts:
        if len(returns) != width:
            raise TypeError(f"{plan.name} returned {width} values from one call and {len(returns)} from another")
        for slot, value in enumerate(returns):
            if is_graph and is_link(value):
                merged[slot].extend(values[value[0]][int(value[1])])
            elif slot < len(list_slots) and list_slots[slot] and not isinstance(value, ExecutionBlocker):
                merged[slot].extend(value)
            else:
                merged[slot].append(value)
    return merged
