"""What one run reports: the :class:`ExecutionResult` (ComfyUI's history entry) and the event stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from comfyserve.engine import events
from comfyserve.engine.graph import DynamicPrompt
from comfyserve.engine.graph_utils import CURRENT_CALL

EventSink = Callable[[str, dict[str, Any]], None]
Status = Literal["success", "error", "interrupted"]


@dataclass
class ExecutionResult:
    """What one prompt did. ``ui_outputs`` and ``meta`` are ComfyUI's history ``outputs`` and ``meta`` (cached
    nodes included); ``messages`` its ``status.messages``; ``errors`` the ``execution_error`` payloads;
    ``executed`` the nodes that ran to completion, ``cached`` those served from the cache."""

    prompt_id: str
    status: Status = "success"
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


class RunReport:
    """Records the run into its result and streams the events to ``emit``. Payloads of streamed-only events
    are built only when there is a sink.

    ``progress_state`` lists the running nodes and the node whose state changed (ComfyUI lists every node
    that is not pending; a finished node is reported once here, so each message stays small on big graphs).
    """

    def __init__(self, prompt_id: str, dynprompt: DynamicPrompt, emit: EventSink | None) -> None:
        self.result = ExecutionResult(prompt_id)
        self.prompt_id = prompt_id
        self.dynprompt = dynprompt
        self.emit = emit
        self._running: dict[str, tuple[float, float]] = {}  # node -> (value, max), kept only with a sink

    def message(self, name: str, data: dict[str, Any]) -> None:
        """A history event: kept in ``messages`` and streamed."""
        self.result.messages.append((name, data))
        if self.emit is not None:
            self.emit(name, data)

    def start(self) -> None:
        self.message(events.EXECUTION_START, events.execution_start(self.prompt_id))

    def announce_cached(self) -> None:
        self.message(events.EXECUTION_CACHED, events.execution_cached(self.prompt_id, list(self.result.cached)))

    def finish(self) -> None:
        if self.result.status == "success":
            self.message(events.EXECUTION_SUCCESS, events.execution_success(self.prompt_id))
        if self.emit is not None:
            self.emit(events.EXECUTING, events.executing(self.prompt_id, None))

    def executing(self, node_id: str, display: str) -> None:
        if self.emit is not None:
            self.emit(events.EXECUTING, events.executing(self.prompt_id, node_id, display))
            self._running[node_id] = (0.0, 1.0)
            self._progress_state(node_id, "running")

    def finished(self, node_id: str) -> None:
        """A node's outputs exist (it ran or came from the cache)."""
        if self.emit is not None:
            _, top = self._running.pop(node_id, (1.0, 1.0))
            self._running[node_id] = (top, top)
            self._progress_state(node_id, "finished")
            del self._running[node_id]

    def _progress_state(self, changed: str, state: str) -> None:
        assert self.emit is not None
        nodes = {}
        dynprompt = self.dynprompt
        for node_id, (value, top) in self._running.items():
            nodes[node_id] = {
                "value": value,
                "max": top,
                "state": state if node_id == changed else "running",
                "node_id": node_id,
                "prompt_id": self.prompt_id,
                "display_node_id": dynprompt.get_display_node_id(node_id),
                "parent_node_id": dynprompt.get_parent_node_id(node_id),
                "real_node_id": dynprompt.get_real_node_id(node_id),
            }
        self.emit(events.PROGRESS_STATE, events.progress_state(self.prompt_id, nodes))

    def record_ui(self, node_id: str, ui: dict[str, Any]) -> None:
        self.result.ui_outputs[node_id] = ui
        self.result.meta[node_id] = {
            "node_id": node_id,
            "display_node": self.dynprompt.get_display_node_id(node_id),
            "parent_node": self.dynprompt.get_parent_node_id(node_id),
            "real_node_id": self.dynprompt.get_real_node_id(node_id),
        }

    def executed(self, node_id: str, ui: dict[str, Any]) -> None:
        """A node's UI: recorded and sent as ``executed``."""
        self.record_ui(node_id, ui)
        self.replay(node_id)

    def replay(self, node_id: str) -> None:
        """Send ``executed`` again for a node served from the cache, if it has a UI."""
        ui = self.result.ui_outputs.get(node_id)
        if ui is not None and self.emit is not None:
            display = self.dynprompt.get_display_node_id(node_id)
            self.emit(events.EXECUTED, events.executed(self.prompt_id, node_id, display, ui))

    def progress(self, value: int, total: int) -> None:
        """From a node's progress hook; the node is the display node of the call in progress."""
        if self.emit is not None:
            call = CURRENT_CALL.get()
            node = call.display_id if call is not None else None
            self.emit(events.PROGRESS, events.progress(self.prompt_id, node, value, total))
            if call is not None and call.node_id in self._running:
                self._running[call.node_id] = (float(value), float(total))
                self._progress_state(call.node_id, "running")

    def blocked(self, node_id: str, node_type: str, message: str) -> None:
        """An ``ExecutionBlocker`` with a message stopped a call: streamed only, not a failure."""
        if self.emit is not None:
            executed = list(self.result.executed)
            self.emit(
                events.EXECUTION_ERROR, events.execution_blocked(self.prompt_id, node_id, node_type, executed, message)
            )

    def error(self, node_id: str, details: dict[str, Any], current_outputs: list[str]) -> None:
        executed = list(self.result.executed)
        payload = events.execution_error(
            self.prompt_id, node_id, self.node_type(node_id), executed, details, current_outputs
        )
        self.result.status = "error"
        self.result.errors.append(payload)
        self.message(events.EXECUTION_ERROR, payload)

    def interrupted(self, node_id: str) -> None:
        self.result.status = "interrupted"
        executed = list(self.result.executed)
        payload = events.execution_interrupted(self.prompt_id, node_id, self.node_type(node_id), executed)
        self.message(events.EXECUTION_INTERRUPTED, payload)

    def node_type(self, node_id: str) -> str:
        node = self.dynprompt.original_prompt.get(node_id) or self.dynprompt.ephemeral.get(node_id) or {}
        return str(node.get("class_type", ""))
