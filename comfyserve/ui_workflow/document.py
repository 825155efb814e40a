"""Reading the editor's saved workflow (the UI format) into plain records: nodes, links, subgraph definitions.

Only what conversion needs is kept. A root graph writes links as ``[id, origin, origin_slot, target,
target_slot, type]``; subgraph definitions (and schema version 1 files) write them as objects. Anything that
does not have the documented shape is refused with a :class:`UIWorkflowError` that says where.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfyserve.engine.errors import WorkflowFormatError

SUBGRAPH_INPUT_ID = -10  # the subgraph's input node, as an origin inside a subgraph definition
SUBGRAPH_OUTPUT_ID = -20  # its output node, as a target


class UIWorkflowError(WorkflowFormatError):
    """The editor's workflow cannot be converted; the message names the node (id and title) when one is at fault."""


@dataclass
class Slot:
    """A node's input or output: its name, type, and link (inputs) or links (outputs)."""

    name: str
    type: Any
    link: int | None = None
    widget: str | None = None  # an input's widget name, when the input feeds a widget
    links: list[int] = field(default_factory=list)  # an output's links


@dataclass
class Link:
    id: int
    origin_id: Any
    origin_slot: int
    target_id: Any
    target_slot: int


@dataclass
class Node:
    id: Any
    type: str
    mode: int
    title: str | None
    inputs: list[Slot]
    outputs: list[Slot]
    widgets_values: Any
    properties: dict[str, Any]

    def label(self, shown_id: str | None = None) -> str:
        """How errors name the node: the editor's id (inside a subgraph instance, ``instance:id``), and its
        title when it has one."""
        return f"node {shown_id or self.id}" + (f" ({self.title!r})" if self.title else "")


@dataclass
class Graph:
    nodes: dict[Any, Node]
    links: dict[int, Link]


@dataclass
class Subgraph:
    id: str
    name: str
    graph: Graph
    inputs: list[tuple[str, Any, list[int]]]  # (name, type, link ids)
    outputs: list[tuple[str, Any, list[int]]]


@dataclass
class Workflow:
    graph: Graph
    subgraphs: dict[str, Subgraph] = field(default_factory=dict)


def is_ui_workflow(document: Any) -> bool:
    """The editor's format: an object with a ``nodes`` array (an API prompt is an object of nodes by id)."""
    return isinstance(document, dict) and isinstance(document.get("nodes"), list) and "class_type" not in document


def parse_ui_workflow(document: dict[str, Any]) -> Workflow:
    definitions = document.get("definitions") or {}
    if not isinstance(definitions, dict):
        raise UIWorkflowError("the workflow's 'definitions' must be an object")
    subgraphs = definitions.get("subgraphs") or []
    if not isinstance(subgraphs, list):
        raise UIWorkflowError("the workflow's 'definitions.subgraphs' must be an array")
    read = [_subgraph(entry, i) for i, entry in enumerate(subgraphs)]
    return Workflow(_graph(document, "the workflow"), {sub.id: sub for sub in read})


def _subgraph(entry: Any, index: int) -> Subgraph:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        raise UIWorkflowError(f"subgraph definition {index} must be an object with a string 'id'")
    name = str(entry.get("name") or entry["id"])
    where = f"subgraph {name!r}"
    return Subgraph(
        entry["id"], name, _graph(entry, where), _io(entry.get("inputs"), where), _io(entry.get("outputs"), where)
    )


def _io(entries: Any, where: str) -> list[tuple[str, Any, list[int]]]:
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UIWorkflowError(f"{where}: inputs and outputs must be arrays of objects")
    return [(str(e.get("name", "")), e.get("type"), [int(i) for i in e.get("linkIds") or []]) for e in entries]


def _graph(document: dict[str, Any], where: str) -> Graph:
    nodes = document.get("nodes")
    if not isinstance(nodes, list):
        raise UIWorkflowError(f"{where}: 'nodes' must be an array")
    read: dict[Any, Node] = {}
    for index, entry in enumerate(nodes):
        node = _node(entry, f"{where}: node {index}")
        read[node.id] = node
    links = document.get("links") or []
    if not isinstance(links, list):
        raise UIWorkflowError(f"{where}: 'links' must be an array")
    by_id: dict[int, Link] = {}
    for entry in links:
        link = _link(entry, where)
        if link is not None:
            by_id[link.id] = link
    return Graph(read, by_id)


def _node(entry: Any, where: str) -> Node:
    if not isinstance(entry, dict) or "id" not in entry:
        raise UIWorkflowError(f"{where} must be an object with an 'id'")
    if not isinstance(entry.get("type"), str):
        raise UIWorkflowError(f"{where} (id {entry['id']}) has no 'type'")
    title = entry.get("title")
    mode = entry.get("mode", 0)
    if not isinstance(mode, int):
        raise UIWorkflowError(f"{where} (id {entry['id']}): 'mode' must be a number")
    properties = entry.get("properties")
    return Node(
        id=entry["id"],
        type=entry["type"],
        mode=mode,
        title=title if isinstance(title, str) else None,
        inputs=[_slot(s, where, "input") for s in _slots(entry.get("inputs"), where)],
        outputs=[_slot(s, where, "output") for s in _slots(entry.get("outputs"), where)],
        widgets_values=entry.get("widgets_values"),
        properties=properties if isinstance(properties, dict) else {},
    )


def _slots(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
        raise UIWorkflowError(f"{where}: 'inputs' and 'outputs' must be arrays of objects")
    return value


def _slot(entry: dict[str, Any], where: str, kind: str) -> Slot:
    link = entry.get("link")
    if link is not None and not isinstance(link, int):
        raise UIWorkflowError(f"{where}: {kind} {entry.get('name')!r} has a link id that is not a number")
    widget = entry.get("widget")
    widget_name = widget.get("name") if isinstance(widget, dict) else None
    links = entry.get("links") or []
    if not isinstance(links, list) or not all(isinstance(i, int) for i in links):
        raise UIWorkflowError(f"{where}: {kind} {entry.get('name')!r} has link ids that are not numbers")
    name = str(entry.get("name", ""))
    return Slot(name, entry.get("type"), link, widget_name if isinstance(widget_name, str) else None, links)


def _link(entry: Any, where: str) -> Link | None:
    if entry is None:
        return None
    if isinstance(entry, list) and len(entry) >= 5:
        link_id, origin_id, origin_slot, target_id, target_slot = entry[:5]
    elif isinstance(entry, dict):
        keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
        link_id, origin_id, origin_slot, target_id, target_slot = (entry.get(k) for k in keys)
    else:
        raise UIWorkflowError(f"{where}: a link must be an array or an object, got {entry!r}")
    if not all(isinstance(v, int) for v in (link_id, origin_slot, target_slot)):
        raise UIWorkflowError(f"{where}: link {link_id!r} has a non-numeric id or slot")
    return Link(link_id, origin_id, origin_slot, target_id, target_slot)
