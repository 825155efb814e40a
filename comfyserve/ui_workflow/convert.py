"""The editor's ``graphToPrompt``: the configured nodes flattened into the API prompt.

Every node inside a subgraph instance gets the id ``instance:inner`` (nested instances add a segment each).
Virtual nodes (reroutes, primitives, notes, subgraph instances) are not sent; links through them are
followed to the real node. Muted nodes (mode 2) are dropped, and inputs linked to them with it; bypassed
nodes (mode 4) hand each output's consumer the input of the same type (same slot first). A widget input
linked from a subgraph input takes the instance's widget value when the instance input is not linked.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from comfyserve.engine.spec import NodeSpec
from comfyserve.ui_workflow.document import (
    SUBGRAPH_INPUT_ID,
    Graph,
    Link,
    Subgraph,
    UIWorkflowError,
    Workflow,
    parse_ui_workflow,
)
from comfyserve.ui_workflow.nodes import Configurator, Configured
from comfyserve.ui_workflow.text import expand_dynamic_prompt, replace_text
from comfyserve.ui_workflow.widgets import PREFIX_REPLACING_CLASSES, UNDEFINED

MODE_NEVER = 2
MODE_BYPASS = 4
Choose = Callable[[list[str]], str]


@dataclass
class Origin:
    node_id: str
    slot: int


@dataclass
class WidgetValue:
    value: Any


Resolved = Origin | WidgetValue | None


@dataclass
class Flat:
    """One node at one place in the flattened graph (the editor's ``ExecutableNodeDTO``)."""

    id: str
    path: tuple[str, ...]
    configured: Configured
    instance: Flat | None  # the subgraph instance this node sits in

    @property
    def graph(self) -> Graph:
        return self.configured.graph


def to_api_prompt(
    document: dict[str, Any],
    specs: Mapping[str, NodeSpec],
    *,
    now: datetime | None = None,
    choose: Choose = random.choice,
    keep_unknown: bool = False,
) -> dict[str, Any]:
    """The API prompt ComfyUI's editor would send for the saved ``document``, with the classes in ``specs``.

    ``now`` dates ``%date:…%`` in output prefixes (default: the current time); ``choose`` picks one option
    of a dynamic prompt's ``{a|b}`` (default: at random, as the editor does). A node whose type is not in
    ``specs`` is refused, unless ``keep_unknown``: then it is sent as the editor sends it, with its links but
    no ``class_type`` (ComfyUI refuses such a prompt; this is for comparing with the editor).
    """
    return _Converter(parse_ui_workflow(document), specs, now or datetime.now(), choose, keep_unknown).run()


class _Converter:
    def __init__(
        self, workflow: Workflow, specs: Mapping[str, NodeSpec], now: datetime, choose: Choose, keep_unknown: bool
    ) -> None:
        self.workflow = workflow
        self.keep_unknown = keep_unknown
        self.nodes = Configurator(workflow, specs)
        self.now = now
        self.choose = choose
        self.flat: dict[str, Flat] = {}

    def run(self) -> dict[str, Any]:
        for node in self.workflow.graph.nodes.values():
            self._flatten(self._configured(self.workflow.graph, node.id), (), None)
        self._apply_primitives()
        output: dict[str, Any] = {}
        for flat in self.flat.values():
            configured = flat.configured
            if configured.virtual or configured.node.mode in (MODE_NEVER, MODE_BYPASS):
                continue
            if configured.spec is None and not self.keep_unknown:
                raise UIWorkflowError(
                    f"{configured.node.label(flat.id)}: node type {configured.class_type!r} is not in this catalog"
                )
            output[flat.id] = {
                "inputs": self._inputs(flat),
                "class_type": configured.class_type if configured.spec else None,
                "_meta": {"title": configured.title},
            }
        for node in output.values():
            inputs = node["inputs"]
            for name in [n for n, v in inputs.items() if isinstance(v, list) and len(v) == 2 and v[0] not in output]:
                del inputs[name]
        return output

    def _configured(self, graph: Graph, node_id: Any) -> Configured:
        configured = self.nodes.get(graph, node_id)
        assert configured is not None
        return configured

    def _flatten(self, configured: Configured, path: tuple[str, ...], instance: Flat | None) -> None:
        """Register the node, and every node inside it when it is a subgraph instance (the configurator has
        refused subgraphs that contain themselves)."""
        flat = Flat(":".join([*path, str(configured.node.id)]), path, configured, instance)
        self.flat[flat.id] = flat
        if configured.subgraph is not None:
            graph = configured.subgraph.graph
            for inner in graph.nodes.values():
                self._flatten(self._configured(graph, inner.id), (*path, str(configured.node.id)), flat)

    def _apply_primitives(self) -> None:
        """Each PrimitiveNode writes its value into the widgets it is linked to. (The editor reads a primitive's
        links in the root graph even inside a subgraph, and fails or misdirects there; these are read in the
        primitive's own graph.)"""
        for flat in self.flat.values():
            primitive = flat.configured
            if primitive.class_type != "PrimitiveNode" or not (primitive.outputs and primitive.outputs[0].links):
                continue
            value = primitive.widgets[0].value if primitive.widgets else UNDEFINED
            if value and primitive.node.properties.get("Run widget replace on values"):
                value = replace_text(self._all_nodes(), value, self.now)
            for widget in self.nodes.primitive_targets(primitive):
                widget.set_as_editor(value)

    def _all_nodes(self, graph: Graph | None = None) -> list[Configured]:
        """Every node, those inside a subgraph instance before the instance (the editor's ``collectAllNodes``)."""
        found: list[Configured] = []
        for node_id in (graph or self.workflow.graph).nodes:
            configured = self._configured(graph or self.workflow.graph, node_id)
            if configured.subgraph is not None:
                found.extend(self._all_nodes(configured.subgraph.graph))
            found.append(configured)
        return found

    def _inputs(self, flat: Flat) -> dict[str, Any]:
        configured = flat.configured
        inputs: dict[str, Any] = {}
        for widget in configured.widgets:
            if not widget.name or not widget.sent or widget.value is UNDEFINED:
                continue
            value = widget.value
            if widget.dynamic_prompts and isinstance(value, str):
                value = expand_dynamic_prompt(value, self.choose)
            elif widget.name == "filename_prefix" and configured.class_type in PREFIX_REPLACING_CLASSES:
                value = replace_text(self._all_nodes(), value, self.now) if isinstance(value, str) else value
            inputs[widget.name] = _wrap(value)
        for index, slot in enumerate(configured.inputs):
            resolved = self._resolve_input(flat, index, set(), None)
            if isinstance(resolved, WidgetValue):
                inputs[slot.name] = _wrap(resolved.value)
            elif isinstance(resolved, Origin):
                inputs[slot.name] = [resolved.node_id, resolved.slot]
        return inputs

    def _resolve_input(self, flat: Flat, slot: int, visited: set[str], type_: Any) -> Resolved:
        configured = flat.configured
        _visit(visited, f"{_subgraph_id(flat)}:{configured.node.id}[I]{slot}", configured, "input", slot)
        if slot >= len(configured.inputs):
            raise UIWorkflowError(f"{configured.node.label()} (id {flat.id}) has no input {slot}")
        input_ = configured.inputs[slot]
        if input_.link is None:
            return None
        link = self._link(flat.graph, input_.link, configured, input_.name)
        if flat.instance is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance(flat.instance, link, visited)
        origin = self.nodes.get(flat.graph, link.origin_id)
        if origin is None:
            raise UIWorkflowError(
                f"{configured.node.label()}: input {input_.name!r} comes from node {link.origin_id}, not in the graph"
            )
        origin_flat = self.flat[":".join([*flat.path, str(link.origin_id)])]
        return self._resolve_output(origin_flat, link.origin_slot, type_ if type_ is not None else input_.type, visited)

    def _resolve_from_instance(self, instance: Flat, link: Link, visited: set[str]) -> Resolved:
        outer = instance.configured
        if link.origin_slot >= len(outer.inputs):
            raise UIWorkflowError(f"{outer.node.label()}: the subgraph has no input {link.origin_slot}")
        outer_input = outer.inputs[link.origin_slot]
        if outer_input.link is None:
            widget = outer.widget(outer_input.widget)
            return WidgetValue(widget.value) if widget is not None else None
        # The editor follows the outer link's target slot, which its load has pointed at this same input.
        return self._resolve_input(instance, link.origin_slot, visited, None)

    def _resolve_output(self, flat: Flat, slot: int, type_: Any, visited: set[str]) -> Resolved:
        configured = flat.configured
        _visit(visited, f"{_subgraph_id(flat)}:{configured.node.id}[O]{slot}", configured, "output", slot)
        if configured.node.mode == MODE_BYPASS:
            index = _bypass_slot(configured, slot, type_)
            return None if index < 0 else self._resolve_input(flat, index, visited, None)
        if configured.subgraph is not None:
            return self._resolve_subgraph_output(flat, configured.subgraph, slot, type_, visited)
        if configured.virtual:
            return self._resolve_input(flat, slot, visited, type_) if slot < len(configured.inputs) else None
        return Origin(flat.id, slot)

    def _resolve_subgraph_output(
        self, flat: Flat, subgraph: Subgraph, slot: int, type_: Any, visited: set[str]
    ) -> Resolved:
        if slot >= len(flat.configured.outputs) or slot >= len(subgraph.outputs):
            raise UIWorkflowError(f"{flat.configured.node.label()}: the subgraph has no output {slot}")
        links = [subgraph.graph.links[i] for i in subgraph.outputs[slot][2] if i in subgraph.graph.links]
        if not links:
            return None
        inner = self.nodes.get(subgraph.graph, links[0].origin_id)
        if inner is None:
            raise UIWorkflowError(
                f"{flat.configured.node.label()}: output {slot} of subgraph {subgraph.name!r} has no source"
            )
        inner_flat = self.flat[f"{flat.id}:{inner.node.id}"]
        return self._resolve_output(inner_flat, links[0].origin_slot, type_, visited)

    @staticmethod
    def _link(graph: Graph, link_id: int, configured: Configured, name: str) -> Link:
        link = graph.links.get(link_id)
        if link is None:
            raise UIWorkflowError(
                f"{configured.node.label()}: input {name!r} refers to link {link_id}, which the graph does not have"
            )
        return link


def _subgraph_id(flat: Flat) -> str | None:
    return flat.instance.configured.subgraph.id if flat.instance and flat.instance.configured.subgraph else None


def _visit(visited: set[str], key: str, configured: Configured, kind: str, slot: int) -> None:
    if key in visited:
        raise UIWorkflowError(f"{configured.node.label()}: circular links through {kind} {slot}")
    visited.add(key)


def _wrap(value: Any) -> Any:
    return {"__value__": value} if isinstance(value, list) else value


def _bypass_slot(configured: Configured, slot: int, type_: Any) -> int:
    """The input a bypassed node passes to output ``slot`` (the editor's rule: same slot when the types fit,
    else the first input of exactly the type, else the first compatible one; -1 when none)."""
    inputs = configured.inputs
    if type_ in ("*", ""):
        return slot if len(inputs) > slot else 0
    output_type = configured.outputs[slot].type if slot < len(configured.outputs) else None
    if slot < len(inputs) and _fits(inputs[slot].type, output_type) and _fits(inputs[slot].type, type_):
        return slot
    exact = next((i for i, s in enumerate(inputs) if s.type == type_), -1)
    if exact >= 0:
        return exact
    return next((i for i, s in enumerate(inputs) if _fits(s.type, output_type) and _fits(s.type, type_)), -1)


def _fits(a: Any, b: Any) -> bool:
    """LiteGraph's ``isValidConnection``: wildcards, equal types, or comma lists sharing a type (case-blind)."""
    if not a or a == "*" or not b or b == "*" or a == b:
        return True
    a, b = _type_text(a).lower(), _type_text(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(x == y or not x or not y or x == "*" or y == "*" for x in a.split(",") for y in b.split(","))


def _type_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
