"""Each saved node as the editor configures it: its sockets, its widgets and their values.

Nodes of a subgraph definition are configured once and shared by every instance of it, as in the editor. A
subgraph instance shows, as widgets of its own, the widgets its inputs feed inside ("promoted" widgets); a
PrimitiveNode holds the value it pushes into the widgets it is linked to.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from comfyserve.engine.spec import NodeSpec
from comfyserve.ui_workflow.document import Graph, Node, Slot, Subgraph, UIWorkflowError, Workflow
from comfyserve.ui_workflow.widgets import (
    WIDGET_TYPES,
    Widget,
    editor_inputs,
    fill,
    input_slots,
    make_widgets,
    migrate_values,
)

VIRTUAL_TYPES = frozenset({"Reroute", "PrimitiveNode", "Note", "MarkdownNote"})
# Types the editor renames on load (old names of core nodes).
RENAMED = {
    "T2IAdapterLoader": "ControlNetLoader",
    "ConditioningAverage ": "ConditioningAverage",
    "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning",
}
SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")


@dataclass
class Configured:
    node: Node
    graph: Graph
    class_type: str
    title: str
    inputs: list[Slot]
    outputs: list[Slot]
    widgets: list[Widget] = field(default_factory=list)
    spec: NodeSpec | None = None
    subgraph: Subgraph | None = None

    @property
    def virtual(self) -> bool:
        return self.subgraph is not None or self.class_type in VIRTUAL_TYPES

    def widget(self, name: str | None) -> Widget | None:
        return next((w for w in self.widgets if w.name == name), None)


class Configurator:
    """Configures every node of the workflow (root and subgraph definitions) against the catalog."""

    def __init__(self, workflow: Workflow, specs: Mapping[str, NodeSpec]) -> None:
        self.workflow = workflow
        self._specs = specs
        self.nodes: dict[tuple[int, Any], Configured] = {}
        for graph in self.graphs():
            for node in graph.nodes.values():
                self.nodes[id(graph), node.id] = self._configure(node, graph)
        self._promoting: set[str] = set()
        self._promoted: set[str] = set()
        for configured in list(self.nodes.values()):
            if configured.subgraph is not None:
                self._promote(configured)
        for configured in self.nodes.values():
            if configured.class_type == "PrimitiveNode":
                self._prime(configured)

    def graphs(self) -> Iterator[Graph]:
        yield self.workflow.graph
        for subgraph in self.workflow.subgraphs.values():
            yield subgraph.graph

    def get(self, graph: Graph, node_id: Any) -> Configured | None:
        return self.nodes.get((id(graph), node_id))

    def _configure(self, node: Node, graph: Graph) -> Configured:
        class_type = RENAMED.get(node.type, node.type)
        subgraph = self.workflow.subgraphs.get(class_type)
        if subgraph is not None:
            inputs = _by_name(node.inputs, subgraph.inputs)
            outputs = _by_name(node.outputs, subgraph.outputs)
            title = node.title or subgraph.name
            return Configured(node, graph, class_type, title, inputs, outputs, subgraph=subgraph)
        spec = self._specs.get(class_type)
        if spec is None or class_type in VIRTUAL_TYPES:
            return Configured(node, graph, class_type, node.title or class_type, node.inputs, node.outputs)
        declared = editor_inputs(spec)
        widgets = make_widgets(class_type, declared)
        saved = node.widgets_values
        fill(widgets, migrate_values(declared, widgets, saved) if isinstance(saved, list) else saved)
        if class_type in SAMPLER_CLASSES:
            sampler = next((w for w in widgets if w.name == "sampler_name"), None)
            if sampler is not None and isinstance(sampler.value, str) and sampler.value.startswith("sample_"):
                sampler.value = sampler.value[len("sample_") :]
        title = node.title or _display_name(spec)
        inputs = _drop_widgetless(_merge_inputs(input_slots(declared), node.inputs), widgets)
        outputs = _merge_outputs(spec, node.outputs)
        return Configured(node, graph, class_type, title, inputs, outputs, widgets, spec)

    def _promote(self, instance: Configured) -> None:
        """The instance's widgets: for each of its inputs, a copy of the first inner widget that input feeds,
        then filled from the instance's own saved values."""
        subgraph = instance.subgraph
        assert subgraph is not None
        key = f"{id(instance.graph)}:{instance.node.id}"
        if key in self._promoted:
            return
        if subgraph.id in self._promoting:
            raise UIWorkflowError(f"{instance.node.label()}: subgraph {subgraph.name!r} contains itself")
        self._promoting.add(subgraph.id)
        for inner in subgraph.graph.nodes.values():
            configured = self.get(subgraph.graph, inner.id)
            if configured is not None and configured.subgraph is not None:
                self._promote(configured)
        self._promoting.discard(subgraph.id)
        by_name = {name: link_ids for name, _, link_ids in subgraph.inputs}
        for slot in instance.inputs:
            widget = self._inner_widget(subgraph, by_name.get(slot.name, []))
            if widget is not None:
                # A text area's copy is the same HTML element: setting one sets both.
                alias = widget if widget.text_area else None
                copy = Widget(slot.name, widget.value, widget.saved, widget.sent, text_area=widget.text_area)
                copy.alias = alias
                instance.widgets.append(copy)
                slot.widget = slot.name
        fill(instance.widgets, instance.node.widgets_values)
        self._promoted.add(key)

    def _inner_widget(self, subgraph: Subgraph, link_ids: list[int]) -> Widget | None:
        for link_id in link_ids:
            link = subgraph.graph.links.get(link_id)
            target = self.get(subgraph.graph, link.target_id) if link is not None else None
            if link is None or target is None or link.target_slot >= len(target.inputs):
                continue
            widget = target.widget(target.inputs[link.target_slot].widget)
            if widget is not None:
                return widget
        return None

    def _prime(self, primitive: Configured) -> None:
        """A PrimitiveNode makes its widget like the input of its first link (none when that input has no
        widget the catalog knows), valued from its own saved values, else that input's widget's value."""
        first = primitive.outputs[0].links[:1] if primitive.outputs else []
        link = primitive.graph.links.get(first[0]) if first else None
        target = self.get(primitive.graph, link.target_id) if link else None
        slot = next((s for s in target.inputs if s.link == link.id), None) if target and link else None
        if target is None or slot is None:
            return
        widget = target.widget(slot.widget)
        if widget is None if slot.widget else slot.type not in WIDGET_TYPES:
            return
        saved = primitive.node.widgets_values
        value = saved[0] if isinstance(saved, list) and saved else (widget.value if widget else None)
        primitive.widgets = [Widget("value", value)]

    def primitive_targets(self, primitive: Configured) -> list[Widget]:
        """The widgets a PrimitiveNode's links reach."""
        found = []
        for link_id in primitive.outputs[0].links if primitive.outputs else []:
            link = primitive.graph.links.get(link_id)
            if link is None:
                raise UIWorkflowError(f"{primitive.node.label()}: link {link_id} is not in the graph")
            target = self.get(primitive.graph, link.target_id)
            # The editor has pointed each link's target slot at the input holding it by now.
            slot = next((s for s in target.inputs if s.link == link.id), None) if target else None
            widget = target.widget(slot.widget) if target and slot else None
            if widget is not None:
                found.append(widget)
        return found


def _by_name(saved: list[Slot], slots: list[tuple[str, Any, list[int]]]) -> list[Slot]:
    """A subgraph instance's sockets are its subgraph's, each with the saved link of the same name."""
    by_name = {slot.name: slot for slot in saved}
    found = [by_name.get(name) for name, _, _ in slots]
    return [
        Slot(name, type_, s.link if s else None, links=s.links if s else [])
        for (name, type_, _), s in zip(slots, found, strict=True)
    ]


def _display_name(spec: NodeSpec) -> str:
    return spec.display_name if spec.display_name not in ("", "None") else spec.name


def _merge_inputs(defined: list[Slot], saved: list[Slot]) -> list[Slot]:
    """The class's sockets carrying the saved links by name, then saved inputs the class does not declare."""
    by_name = {slot.name: slot for slot in saved}
    merged = [Slot(d.name, d.type, by_name[d.name].link if d.name in by_name else None, d.widget) for d in defined]
    names = {d.name for d in defined}
    return merged + [slot for slot in saved if slot.name not in names]


def _drop_widgetless(inputs: list[Slot], widgets: list[Widget]) -> list[Slot]:
    """The editor removes a socket saved for a widget the class does not have, while walking the list (so the
    socket after a removed one is not looked at)."""
    names = {w.name for w in widgets}
    kept = list(inputs)
    index = 0
    while index < len(kept):
        slot = kept[index]
        if slot.widget is not None and slot.widget not in names:
            del kept[index]
        index += 1
    return kept


def _merge_outputs(spec: NodeSpec, saved: list[Slot]) -> list[Slot]:
    defined = [Slot(name, type_) for name, type_ in zip(spec.return_names, spec.return_types, strict=False)]
    merged = [Slot(d.name, d.type, links=s.links) for d, s in zip(defined, saved, strict=False)]
    return merged + defined[len(saved) :] + saved[len(defined) :]
