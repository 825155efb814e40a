"""What the executor needs to know about a node class, read once per class, and the list-mapping call
convention (reference §1.7): every input is a list; a node is called once per element of the longest list,
shorter lists repeating their last element, or once with whole lists when it declares ``INPUT_IS_LIST``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from comfyserve.engine.errors import NodeInputError
from comfyserve.engine.spec import NodeSpec


@dataclass(frozen=True, slots=True)
class NodePlan:
    """A class's contract as the executor uses it: the function to call, its flags and its hooks."""

    name: str
    signature_head: blake2b  # the hash state after this class's part of a signature; only ever copied
    quoted_inputs: Mapping[str, str]  # repr() of each declared input name, as signatures spell it
    cls: type
    function: str
    output_node: bool
    input_is_list: bool
    is_async: bool
    output_is_list: tuple[bool, ...]
    has_list_output: bool
    declared: frozenset[str]  # every input the class declares, hidden ones included: other constants are dropped
    lazy: frozenset[str]
    raw_links: frozenset[str]
    hidden: tuple[tuple[str, str], ...]
    keyed_by_id: bool
    is_changed: Callable[..., Any] | None
    is_changed_params: frozenset[str] | None
    lazy_check_params: frozenset[str] | None
    has_lazy_check: bool

    @classmethod
    def build(cls, node_class: type, spec: NodeSpec) -> NodePlan:
        function = getattr(node_class, "FUNCTION", None)
        if not isinstance(function, str) or not callable(getattr(node_class, function, None)):
            raise TypeError(f"node class {spec.name} has no FUNCTION method {function!r}")
        is_changed = getattr(node_class, "IS_CHANGED", None)
        lazy_check = getattr(node_class, "check_lazy_status", None)
        declared = spec.declared
        return cls(
            name=spec.name,
            signature_head=blake2b(f"{spec.name!r}\x00".encode(), digest_size=16),
            quoted_inputs={name: repr(name) for name in declared},
            cls=node_class,
            function=function,
            output_node=spec.output_node,
            input_is_list=spec.input_is_list,
            is_async=inspect.iscoroutinefunction(getattr(node_class, function)),
            output_is_list=spec.output_is_list,
            has_list_output=any(spec.output_is_list),
            declared=frozenset(spec.inputs),
            lazy=frozenset(n for n, s in declared.items() if s.lazy),
            raw_links=frozenset(n for n, s in declared.items() if s.options.get("rawLink")),
            hidden=tuple(spec.hidden.items()),
            keyed_by_id=spec.not_idempotent or spec.uses_unique_id,
            is_changed=is_changed if callable(is_changed) else None,
            is_changed_params=accepted_params(is_changed) if callable(is_changed) else None,
            lazy_check_params=accepted_params(lazy_check) if callable(lazy_check) else None,
            has_lazy_check=callable(lazy_check),
        )


def accepted_params(function: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``function`` accepts; ``None`` when it takes ``**kwargs``."""
    names = []
    for param in inspect.signature(function).parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.append(param.name)
    return frozenset(names)


def only(kwargs: dict[str, Any], names: frozenset[str] | None) -> dict[str, Any]:
    """``kwargs`` restricted to the names a hook accepts (all of them for a ``**kwargs`` hook)."""
    return kwargs if names is None else {k: v for k, v in kwargs.items() if k in names}


def slice_calls(inputs: dict[str, list[Any]], input_is_list: bool) -> list[dict[str, Any]]:
    """The keyword arguments of each call of a node, from its list-valued inputs."""
    if input_is_list:
        return [inputs]
    single = True
    for values in inputs.values():
        if len(values) != 1:
            single = False
            break
    if single:
        return [{name: values[0] for name, values in inputs.items()}]
    lengths = [len(values) for values in inputs.values()]
    longest = max(lengths, default=0)
    if longest == 0:
        return [{}]
    if not min(lengths):
        empty = next(name for name, values in inputs.items() if not values)
        raise NodeInputError(f"input {empty!r} received an empty list while another input has {longest} items")
    return [{name: values[min(i, len(values) - 1)] for name, values in inputs.items()} for i in range(longest)]
