"""Execution events with ComfyUI's names and payloads (reference §1.9, §1.10).

The ``HISTORY`` events carry a millisecond ``timestamp`` and are kept as the run's status messages, as
ComfyUI keeps them in ``history[...].status.messages``; the others are only streamed.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

EXECUTION_START = "execution_start"
EXECUTION_CACHED = "execution_cached"
EXECUTING = "executing"
PROGRESS = "progress"
PROGRESS_STATE = "progress_state"
EXECUTED = "executed"
EXECUTION_SUCCESS = "execution_success"
EXECUTION_ERROR = "execution_error"
EXECUTION_INTERRUPTED = "execution_interrupted"

HISTORY = frozenset({EXECUTION_START, EXECUTION_CACHED, EXECUTION_SUCCESS, EXECUTION_ERROR, EXECUTION_INTERRUPTED})

_MAX_VALUE_TEXT = 200


def timestamp() -> int:
    return int(time.time() * 1000)


def execution_start(prompt_id: str) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "timestamp": timestamp()}


def execution_cached(prompt_id: str, nodes: list[str]) -> dict[str, Any]:
    return {"nodes": nodes, "prompt_id": prompt_id, "timestamp": timestamp()}


def executing(prompt_id: str, node: str | None, display_node: str | None = None) -> dict[str, Any]:
    """``node=None`` is the end-of-prompt signal ``{"node": null, "prompt_id"}``."""
    if node is None:
        return {"node": None, "prompt_id": prompt_id}
    return {"node": node, "display_node": display_node or node, "prompt_id": prompt_id}


def progress(prompt_id: str, node: str | None, value: int, max_value: int) -> dict[str, Any]:
    return {"value": value, "max": max_value, "prompt_id": prompt_id, "node": node}


def progress_state(prompt_id: str, nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ComfyUI's per-node progress map: ``nodes`` maps a node id to its ``value``, ``max``, ``state``
    (``running`` | ``finished``) and ids (``node_id``, ``display_node_id``, ``parent_node_id``, ``real_node_id``)."""
    return {"prompt_id": prompt_id, "nodes": nodes}


def executed(prompt_id: str, node: str, display_node: str, output: dict[str, Any] | None) -> dict[str, Any]:
    return {"node": node, "display_node": display_node, "output": output, "prompt_id": prompt_id}


def execution_success(prompt_id: str) -> dict[str, Any]:
    return {"prompt_id": prompt_id, "timestamp": timestamp()}


def execution_error(
    prompt_id: str,
    node_id: str,
    node_type: str,
    executed: list[str],
    details: dict[str, Any],
    current_outputs: list[str],
) -> dict[str, Any]:
    """``details`` comes from :func:`error_details` (or is built the same way for graph errors)."""
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": executed,
        "exception_message": details["exception_message"],
        "exception_type": details["exception_type"],
        "traceback": details["traceback"],
        "current_inputs": details["current_inputs"],
        "current_outputs": current_outputs,
        "timestamp": timestamp(),
    }


def execution_blocked(
    prompt_id: str, node_id: str, node_type: str, executed: list[str], message: str
) -> dict[str, Any]:
    """What ComfyUI streams when an ``ExecutionBlocker`` with a message stops a node (not a failure)."""
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": executed,
        "exception_message": f"Execution Blocked: {message}",
        "exception_type": "ExecutionBlocked",
        "traceback": [],
        "current_inputs": [],
        "current_outputs": [],
    }


def execution_interrupted(prompt_id: str, node_id: str, node_type: str, executed: list[str]) -> dict[str, Any]:
    return {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": executed,
        "timestamp": timestamp(),
    }


def error_details(exc: BaseException, inputs: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """The exception part of an ``execution_error``: message, ``module.QualName``, traceback lines, inputs."""
    return {
        "exception_message": str(exc),
        "exception_type": full_type_name(type(exc)),
        "traceback": traceback.format_tb(exc.__traceback__),
        "current_inputs": {name: [format_value(v) for v in values] for name, values in (inputs or {}).items()},
    }


def full_type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def format_value(value: Any) -> Any:
    """JSON scalars as they are; anything else as its (shortened) ``str``."""
    if value is None or isinstance(value, int | float | bool | str):
        return value
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 3] + "..."
