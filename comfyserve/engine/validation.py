"""Workflow validation with ComfyUI's rules and error shapes (reference §1.2), plus what ComfyUI lacks:
explicit cycle detection, missing link targets as errors, new-style combo and ``step`` checks, model
inventory checks and resource caps. Runs on :class:`NodeSpec` alone, so no node code (and no torch) is
needed; given the node classes it also runs their ``VALIDATE_INPUTS`` hooks, as the worker does.

Every walk is iterative: a 10,000-node chain validates without touching the recursion limit.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyserve.engine.graph_utils import ExecutionBlocker
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.node_api import MODEL_FOLDER, takes_upload
from comfyserve.engine.prompt_format import unwrap_literal
from comfyserve.engine.spec import InputSpec, NodeSpec, ValidateHook
from comfyserve.engine.types import types_compatible

ErrorDict = dict[str, Any]
_LIMITED_INPUTS = frozenset({"steps", "batch_size", "width", "height"})
# Nodes whose output is their ``value`` input: caps see the constant behind a link from one of them.
_PASS_THROUGH = frozenset({"PrimitiveInt", "PrimitiveFloat"})
_MAX_FOLD_HOPS = 64


@dataclass(frozen=True)
class Limits:
    """Caps that keep one request from asking for unbounded GPU work (``None`` disables a cap).

    Validation checks them on literal values, values behind primitive nodes, and image sizes carried through
    the graph (a node with ``width``/``height`` sets a size, one with a literal ``scale_by`` multiplies it, the
    others keep the largest size they receive); nodes that allocate images check ``max_pixels`` again at run
    time (:func:`comfyserve.engine.context.check_pixels`), for what validation cannot see.
    """

    max_nodes: int | None = 5000
    max_pixels: int | None = 4096 * 4096
    max_steps: int | None = 1000
    max_batch_size: int | None = 64


LOCAL_LIMITS = Limits(max_nodes=None)  # a user's own machine (``comfyserve run``): any number of nodes


@dataclass
class ValidationResult:
    """``prompt`` is a copy with values coerced as ComfyUI coerces them; ``outputs`` are the runnable outputs."""

    ok: bool
    error: ErrorDict | None
    node_errors: dict[str, Any]
    outputs: list[str]
    prompt: dict[str, Any]

    def response(self) -> dict[str, Any]:
        """The body ComfyUI answers an invalid prompt with: ``{"error": ..., "node_errors": ...}``."""
        return {"error": self.error, "node_errors": self.node_errors}


def make_error(type_: str, message: str, details: str = "", extra_info: dict[str, Any] | None = None) -> ErrorDict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info or {}}


def _failed(error: ErrorDict, prompt: Any, node_errors: dict[str, Any] | None = None) -> ValidationResult:
    return ValidationResult(False, error, node_errors or {}, [], prompt if isinstance(prompt, dict) else {})


@dataclass(slots=True)
class _NodeState:
    ok: bool = True
    errors: list[ErrorDict] = field(default_factory=list)


def validate_prompt(
    prompt: Any,
    specs: Mapping[str, NodeSpec],
    *,
    inventory: ModelInventory | None = None,
    input_names: set[str] | None = None,
    targets: list[str] | None = None,
    strict: bool = False,
    limits: Limits | None = None,
    node_classes: Mapping[str, type] | None = None,
) -> ValidationResult:
    """Validate an API-format prompt against node specs.

    ``inventory`` checks model file names; ``input_names`` (when given) are the input files a
    ``LoadImage`` may name; ``targets`` restricts the outputs (ComfyUI's ``partial_execution_targets``);
    ``strict`` requires every output to be valid; ``node_classes`` enables ``VALIDATE_INPUTS`` hooks.
    """
    limits = limits or Limits()
    if not isinstance(prompt, dict):
        return _failed(make_error("invalid_prompt", "Prompt must be an object of nodes", type(prompt).__name__), prompt)
    if limits.max_nodes is not None and len(prompt) > limits.max_nodes:
        return _failed(
            make_error(
                "resource_limit_exceeded",
                "Prompt has too many nodes",
                f"{len(prompt)} nodes exceeds the limit of {limits.max_nodes}",
            ),
            prompt,
        )
    for node_id, node in prompt.items():
        if type(node) is dict and node.get("class_type") in specs and type(node.get("inputs", {})) is dict:
            continue  # the well-formed case, kept cheap
        problem = _node_shape_problem(node_id, node, specs)
        if problem is not None:
            return _failed(problem, prompt)

    outputs = [nid for nid, node in prompt.items() if specs[node["class_type"]].output_node]
    if targets is not None:
        wanted = {str(t) for t in targets}
        outputs = [nid for nid in outputs if nid in wanted]
    if not outputs:
        return _failed(make_error("prompt_no_outputs", "Prompt has no outputs"), prompt)

    checker = _Checker(prompt, specs, inventory, input_names, limits, node_classes)
    good: list[str] = []
    failed: list[tuple[str, list[ErrorDict]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        checker.check_output(output_id)
        if checker.states[output_id].ok:
            good.append(output_id)
            continue
        failed.append((output_id, checker.states[output_id].errors))
        # ComfyUI's order: every node validated so far, each after its inputs; and, as ComfyUI does, a failed
        # output is added to the dependents of every node with errors found so far.
        for node_id, state in checker.states.items():
            if state.errors:
                entry = node_errors.setdefault(
                    node_id,
                    {"errors": state.errors, "dependent_outputs": [], "class_type": prompt[node_id]["class_type"]},
                )
                entry["dependent_outputs"].append(output_id)

    if not good or (strict and failed):
        details = "\n".join(f"{e['message']}: {e['details']}" for _, errs in failed for e in errs)
        error = make_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return ValidationResult(False, error, node_errors, [], checker.coerced)
    return ValidationResult(True, None, node_errors, good, checker.coerced)


def _node_shape_problem(node_id: str, node: Any, specs: Mapping[str, NodeSpec]) -> ErrorDict | None:
    where = f"Node ID '#{node_id}'"
    if not isinstance(node, dict):
        return make_error("invalid_prompt", "Cannot execute because a node is not an object.", where)
    class_type = node.get("class_type")
    if class_type is None:
        return make_error("invalid_prompt", "Cannot execute because a node is missing the class_type property.", where)
    if not isinstance(class_type, str) or class_type not in specs:
        return make_error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.", where)
    if not isinstance(node.get("inputs", {}), dict):
        return make_error("invalid_prompt", "Cannot execute because a node's inputs are not an object.", where)
    return None


class _Checker:
    """Validates nodes on demand, memoising each node's verdict across outputs (ComfyUI's ``validated``)."""

    def __init__(
        self,
        prompt: dict[str, Any],
        specs: Mapping[str, NodeSpec],
        inventory: ModelInventory | None,
        input_names: set[str] | None,
        limits: Limits,
        node_classes: Mapping[str, type] | None,
    ) -> None:
        self.prompt = prompt
        self.specs = specs
        self.inventory = inventory
        self.input_names = input_names
        self.limits = limits
        self.node_classes = node_classes or {}
        self.states: dict[str, _NodeState] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # the largest image (width, height) a node may produce
        self._source_cache: dict[str, list[str]] = {}
        self.coerced: dict[str, Any] = dict(prompt)  # nodes are copied on first coercion (copy on write)

    def _sources(self, node_id: str) -> list[str]:
        """The existing nodes that feed declared inputs of ``node_id`` (links, for the walk)."""
        sources = self._source_cache.get(node_id)
        if sources is None:
            spec = self.specs[self.prompt[node_id]["class_type"]]
            inputs = self.prompt[node_id].get("inputs", {})
            prompt = self.prompt
            sources = []
            for name in spec.declared:
                value = inputs.get(name)
                if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in prompt:
                    sources.append(value[0])
            self._source_cache[node_id] = sources
        return sources

    def check_output(self, output_id: str) -> list[str]:
        """Validate ``output_id`` and its ancestors (post-order); returns the nodes this walk reached."""
        visited: list[str] = []
        seen: set[str] = set()
        stack: list[tuple[str, int]] = [(output_id, 0)]
        on_path: dict[str, int] = {}
        path: list[str] = []
        while stack:
            node_id, child_index = stack.pop()
            if child_index == 0:
                if node_id in seen:
                    continue
                seen.add(node_id)
                visited.append(node_id)
                if node_id in self.states:
                    continue
                on_path[node_id] = len(path)
                path.append(node_id)
            sources = self._sources(node_id)
            descended = False
            while child_index < len(sources):
                source = sources[child_index]
                child_index += 1
                if source in on_path:
                    self._mark_cycle(path[on_path[source] :])
                    continue
                if source not in seen:
                    stack.append((node_id, child_index))
                    stack.append((source, 0))
                    descended = True
                    break
            if descended:
                continue
            path.pop()
            del on_path[node_id]
            if node_id not in self.states:
                self.states[node_id] = self._check_node(node_id)
        return visited

    def _mark_cycle(self, cycle: list[str]) -> None:
        loop = " -> ".join([*cycle, cycle[0]])
        for node_id in cycle:
            state = self.states.setdefault(node_id, _NodeState())
            state.ok = False
            state.errors.append(
                make_error("dependency_cycle", "Dependency cycle detected", f"cycle: {loop}", {"cycle": cycle})
            )

    def _check_node(self, node_id: str) -> _NodeState:
        node = self.prompt[node_id]
        spec = self.specs[node["class_type"]]
        inputs = node.get("inputs", {})
        coerced = inputs
        state = _NodeState()
        errors = state.errors
        hook = spec.validate_hook
        linked_types: dict[str, str] = {}
        for name, input_spec in spec.declared.items():
            if name not in inputs:
                if input_spec.kind == "required":
                    errors.append(
                        make_error("required_input_missing", "Required input is missing", name, {"input_name": name})
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                received = self._check_link(hook, name, input_spec, value, errors, state)
                if received is not None:
                    linked_types[name] = received
                continue
            bypass = hook is not None and hook.bypasses_builtin_checks(name)
            literal = unwrap_literal(value)
            error, new_value = check_constant(name, input_spec, literal, bypass, self)
            if error is None and name in spec.served_options:
                error = _unserved_error(spec, name, new_value)
            if error is not None:
                errors.append(error)
            elif isinstance(new_value, list):
                continue  # a literal list stays wrapped, so the executor never mistakes it for a link
            elif new_value is not value or type(new_value) is not type(value):
                if coerced is inputs:
                    coerced = dict(inputs)
                    self.coerced[node_id] = {**node, "inputs": coerced}
                coerced[name] = new_value
        if not errors and not _LIMITED_INPUTS.isdisjoint(spec.declared):
            errors.extend(self._limit_errors(spec, coerced))
        if not errors and self.limits.max_pixels is not None:
            errors.extend(self._size_errors(node_id, spec, coerced))
        if not errors and hook is not None and node["class_type"] in self.node_classes:
            errors.extend(self._run_hook(node["class_type"], spec, coerced, linked_types))
        if errors:
            state.ok = False
        return state

    def _check_link(
        self,
        hook: ValidateHook | None,
        name: str,
        input_spec: InputSpec,
        value: list[Any],
        errors: list[ErrorDict],
        state: _NodeState,
    ) -> str | None:
        if len(value) != 2:
            errors.append(
                make_error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    _link_info(name, input_spec, value),
                )
            )
            return None
        source, slot = value
        if not isinstance(source, str) or source not in self.prompt:
            errors.append(
                make_error(
                    "linked_node_missing",
                    "Linked node does not exist",
                    f"{name}: node '{source}' is not in the prompt",
                    _link_info(name, input_spec, value),
                )
            )
            return None
        source_spec = self.specs[self.prompt[source]["class_type"]]
        if isinstance(slot, bool) or not isinstance(slot, int | float) or int(slot) != slot:
            errors.append(
                make_error(
                    "bad_linked_input",
                    "Bad linked input, slot index must be an integer",
                    name,
                    _link_info(name, input_spec, value),
                )
            )
            return None
        if not 0 <= int(slot) < len(source_spec.return_types):
            errors.append(
                make_error(
                    "bad_linked_input",
                    "Bad linked input, slot index out of range",
                    f"{name}: node '{source}' ({source_spec.name}) has {len(source_spec.return_types)} outputs, "
                    f"not slot {int(slot)}",
                    _link_info(name, input_spec, value),
                )
            )
            return None
        received = source_spec.return_types[int(slot)]
        if (
            received != input_spec.type
            and not (hook is not None and hook.wants_input_types)
            and not types_compatible(received, input_spec.type)
        ):
            expected = input_spec.type if isinstance(input_spec.type, str) else "COMBO"
            errors.append(
                make_error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({expected})",
                    {
                        "input_name": name,
                        "input_config": input_spec.config(),
                        "received_type": received,
                        "linked_node": value,
                    },
                )
            )
            return None
        upstream = self.states.get(source)
        if upstream is not None and not upstream.ok:
            state.ok = False
        return received

    def _folded(self, value: Any) -> Any:
        """``value``, or for a link from a primitive node the constant behind it (through chains of them);
        a link that cannot be folded stays a list."""
        for _ in range(_MAX_FOLD_HOPS):
            if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)):
                return value
            source = self.coerced.get(value[0])
            if source is None or source.get("class_type") not in _PASS_THROUGH:
                return value
            value = source.get("inputs", {}).get("value")
        return value

    def _limit_errors(self, spec: NodeSpec, inputs: dict[str, Any]) -> list[ErrorDict]:
        errors = []
        caps = (("steps", self.limits.max_steps), ("batch_size", self.limits.max_batch_size))
        for name, cap in caps:
            value = self._folded(inputs.get(name))
            if cap is not None and name in spec.declared and _is_int(value) and value > cap:
                errors.append(_limit_error(name, f"{value} exceeds this service's limit of {cap}"))
        return errors

    def _size_errors(self, node_id: str, spec: NodeSpec, inputs: dict[str, Any]) -> list[ErrorDict]:
        """Record the largest image ``node_id`` may produce; refuse one over ``max_pixels`` where it is made."""
        sizes = self.sizes
        largest: tuple[int, int] | None = None
        for source in self._sources(node_id):
            size = sizes.get(source)
            if size is not None and (largest is None or size[0] * size[1] > largest[0] * largest[1]):
                largest = size
        declared = spec.declared
        made: tuple[int, int] | None = None
        name = "width"
        if "width" in declared:
            width, height = self._folded(inputs.get("width")), self._folded(inputs.get("height"))
            if _is_int(width) and _is_int(height) and width > 0 and height > 0:
                made = (width, height)
        if made is None and largest is not None and "scale_by" in declared:
            scale = self._folded(inputs.get("scale_by"))
            if isinstance(scale, int | float):
                made, name = (round(largest[0] * scale), round(largest[1] * scale)), "scale_by"
        if made is None:
            if largest is not None:
                sizes[node_id] = largest
            return []
        sizes[node_id] = made
        cap = self.limits.max_pixels
        if cap is None or made[0] * made[1] <= cap:
            return []
        return [_limit_error(name, f"{made[0]}x{made[1]} exceeds this service's limit of {cap:,} pixels")]

    def _run_hook(
        self, class_type: str, spec: NodeSpec, inputs: dict[str, Any], linked_types: dict[str, str]
    ) -> list[ErrorDict]:
        hook = spec.validate_hook
        assert hook is not None
        node_class = self.node_classes[class_type]
        names = spec.declared if hook.takes_kwargs else hook.params
        kwargs: dict[str, Any] = {n: (None if isinstance(inputs.get(n), list) else inputs.get(n)) for n in names}
        if hook.takes_kwargs:
            kwargs = {n: v for n, v in kwargs.items() if n in inputs}
        if hook.wants_input_types:
            kwargs["input_types"] = linked_types
        try:
            result = node_class.VALIDATE_INPUTS(**kwargs)  # type: ignore[attr-defined]
            if isinstance(result, Awaitable):
                result = _resolve(result)
        except Exception as exc:
            return [
                make_error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {"exception_type": type(exc).__name__, "traceback": traceback.format_exception(exc)},
                )
            ]
        if result is True or isinstance(result, ExecutionBlocker):
            return []
        details = ", ".join(sorted(kwargs))
        if result is not False and result is not None:
            details = f"{details} - {result}"
        return [make_error("custom_validation_failed", "Custom validation failed for node", details, {})]


def _resolve(awaitable: Awaitable[Any]) -> Any:
    """The result of an async ``VALIDATE_INPUTS``, awaited on a loop of its own (a thread's when the caller
    is itself inside a running loop). asyncio loads only here: the CLI's validate path starts without it."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def _link_info(name: str, input_spec: InputSpec, value: Any) -> dict[str, Any]:
    return {"input_name": name, "input_config": input_spec.config(), "received_value": value}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _limit_error(name: str, details: str) -> ErrorDict:
    return make_error(
        "resource_limit_exceeded", "Value exceeds a resource limit", f"{name}: {details}", {"input_name": name}
    )


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _coerce(type_name: str, value: Any) -> Any:
    """ComfyUI's coercion (int(), float(), str()), stricter where ComfyUI is surprising."""
    if type_name == "INT":
        if isinstance(value, str):
            value = value.strip()
            return int(float(value)) if any(c in value for c in ".eE") else int(value)
        if isinstance(value, dict | list):
            raise TypeError(f"{type(value).__name__} is not a number")
        return int(value)
    if type_name == "FLOAT":
        if isinstance(value, dict | list):
            raise TypeError(f"{type(value).__name__} is not a number")
        result = float(value)
        if not math.isfinite(result):
            raise ValueError(f"{value!r} is not a finite number")
        return result
    if type_name == "STRING":
        return value if isinstance(value, str) else str(value)
    if type_name == "BOOLEAN":
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(f"{value!r} is not true or false")
        if isinstance(value, dict | list):
            raise TypeError(f"{type(value).__name__} is not a boolean")
        return bool(value)
    return value


def check_constant(
    name: str, spec: InputSpec, value: Any, bypass: bool, checker: _Checker
) -> tuple[ErrorDict | None, Any]:
    """Coerce and range/choice-check one constant input; returns (error, coerced value)."""
    config = spec.config()
    if isinstance(spec.type, str) and spec.type in ("INT", "FLOAT", "STRING", "BOOLEAN"):
        try:
            value = _coerce(spec.type, value)
        except (TypeError, ValueError, OverflowError) as exc:
            return (
                make_error(
                    "invalid_input_type",
                    f"Failed to convert an input value to a {spec.type} value",
                    f"{name}, {_short(value)}, {exc}",
                    {"input_name": name, "input_config": config, "received_value": _short(value)},
                ),
                value,
            )
    if bypass:
        return None, value
    info = {"input_name": name, "input_config": config, "received_value": value}
    options = spec.options
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = options.get("min"), options.get("max")
        if isinstance(low, int | float) and value < low:
            return make_error("value_smaller_than_min", f"Value {value} smaller than min of {low}", name, info), value
        if isinstance(high, int | float) and value > high:
            return make_error("value_bigger_than_max", f"Value {value} bigger than max of {high}", name, info), value
        step_error = _step_error(name, spec, value, info)
        if step_error is not None:
            return step_error, value
    if spec.is_combo:
        return _combo_error(name, spec, value, checker), value
    return None, value


def _step_error(name: str, spec: InputSpec, value: float, info: dict[str, Any]) -> ErrorDict | None:
    """``step`` on INT inputs (counted from ``min``); FLOAT inputs only where they declare ``round``.

    A FLOAT ``step`` is a UI increment (ComfyUI accepts 0.15 where the step is 0.1); ``round`` is the
    precision the node asks for.
    """
    options = spec.options
    if spec.type == "INT":
        step = options.get("step")
        if not isinstance(step, int) or step <= 1:
            return None
        base = options.get("min", 0) if isinstance(options.get("min"), int) else 0
        if (int(value) - base) % step == 0:
            return None
    elif spec.type == "FLOAT":
        granularity = options.get("round")
        if not isinstance(granularity, int | float) or isinstance(granularity, bool) or granularity <= 0:
            return None
        ratio = value / granularity
        if abs(ratio - round(ratio)) <= 1e-6 * max(1.0, abs(ratio)):
            return None
        step = granularity
    else:
        return None
    return make_error("value_not_multiple_of_step", f"Value {value} is not a multiple of step {step}", name, info)


def _combo_error(name: str, spec: InputSpec, value: Any, checker: _Checker) -> ErrorDict | None:
    folder = spec.options.get(MODEL_FOLDER)
    if isinstance(folder, str):
        if checker.inventory is None or checker.inventory.has(folder, value):
            return None
        choices: tuple[Any, ...] = tuple(checker.inventory.names(folder))
    elif takes_upload(spec.options):
        if not isinstance(value, str) or not value:
            return make_error("value_not_in_list", "Value not in list", f"{name}: an input image name is required")
        if checker.input_names is None or value in checker.input_names:
            return None
        choices = tuple(sorted(checker.input_names))
    else:
        choices = spec.choices or ()
        if value in choices:
            return None
    listed = f"(list of length {len(choices)})" if len(choices) > 20 else str(list(choices))
    return make_error(
        "value_not_in_list",
        "Value not in list",
        f"{name}: '{value}' not in {listed}",
        {"input_name": name, "input_config": None if len(choices) > 20 else spec.config(), "received_value": value},
    )


def _unserved_error(spec: NodeSpec, name: str, value: Any) -> ErrorDict | None:
    """A catalog option this engine does not serve (ComfyUI's whole list is offered, for the catalog's sake)."""
    served = spec.served_options[name]
    if value in served:
        return None
    return make_error(
        "value_not_served",
        "Value not served by this engine",
        f"{name}: {spec.name} {name} {value!r} is not served by this engine; it serves {list(served)}",
        {"input_name": name, "received_value": value, "served_values": list(served)},
    )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
