"""Engine guards and ComfyUI details found by ComfyUI's execution suite: hidden inputs given as constants,
caps on runaway expansion, cancellation inside expansion loops, the hard deadline, and async or blocking
``VALIDATE_INPUTS`` hooks."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.deadline import exit_after
from comfyserve.engine.executor import Executor
from comfyserve.engine.graph_utils import ExecutionBlocker, GraphBuilder
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validation import validate_prompt
from tests.testpack.harness import context, run


class HiddenEcho:
    """Echoes a hidden input that is not one of the special kinds: the prompt gives it as a constant."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}, "hidden": {"value": ("*",), "node": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "echo"

    def echo(self, value: Any = None, node: str = "") -> tuple[Any]:
        return (value,)


class Keep:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True

    def keep(self, value: Any) -> dict[str, Any]:
        return {"ui": {"value": [value]}}


class Forever:
    """Expands into another Forever, ``width`` at a time: a loop that never ends."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"width": ("INT",)}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "again"

    def again(self, width: int) -> dict[str, Any]:
        g = GraphBuilder()
        nodes = [g.node("Forever", width=width) for _ in range(width)]
        return {"result": (nodes[0].out(0),), "expand": g.finalize()}


class AsyncChecked:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT",)}}

    @classmethod
    async def VALIDATE_INPUTS(cls, value: int) -> bool | str:
        await asyncio.sleep(0)
        return True if value >= 0 else "value must not be negative"

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True

    def run(self, value: int) -> tuple[()]:
        return ()


class BlockerChecked(AsyncChecked):
    @classmethod
    def VALIDATE_INPUTS(cls, value: int) -> Any:
        return ExecutionBlocker(None)


REGISTRY = NodeRegistry()
REGISTRY.register_mappings(
    {"HiddenEcho": HiddenEcho, "Keep": Keep, "Forever": Forever, "AsyncChecked": AsyncChecked}
    | {"BlockerChecked": BlockerChecked},
    module="tests.unit.test_engine_guards",
    builtin=True,
)
SPECS = REGISTRY.specs()


def test_a_hidden_input_given_as_a_constant_reaches_the_node(tmp_path: Path) -> None:
    prompt = {
        "1": {"class_type": "HiddenEcho", "inputs": {"value": 42}},
        "2": {"class_type": "Keep", "inputs": {"value": ["1", 0]}},
    }
    result, _ = run(Executor(REGISTRY), prompt, ["2"], context(tmp_path))
    assert result.status == "success"
    assert result.ui_outputs["2"] == {"value": [42]}


@pytest.mark.parametrize(
    ("width", "depth", "created", "message"),
    [
        (1, 30, 20_000, "expansions nested 31 deep (the limit is 30)"),
        (5, 1000, 100, "105 nodes created by expansion (the limit is 100 per job)"),
    ],
)
def test_runaway_expansion_stops_with_a_clear_error(
    tmp_path: Path, width: int, depth: int, created: int, message: str
) -> None:
    prompt = {
        "1": {"class_type": "Forever", "inputs": {"width": width}},
        "2": {"class_type": "Keep", "inputs": {"value": ["1", 0]}},
    }
    executor = Executor(REGISTRY, max_expansion_depth=depth, max_created_nodes=created)
    result, events = run(executor, prompt, ["2"], context(tmp_path))
    assert result.status == "error"
    (error,) = events.of("execution_error")
    assert message in error["exception_message"] and "does a loop never end?" in error["exception_message"]
    assert error["node_id"] == "1"  # blamed on the node of the original prompt


def test_an_expansion_loop_honours_cancellation(tmp_path: Path) -> None:
    expansions = [0]

    def cancelled() -> bool:
        expansions[0] += 1
        return expansions[0] > 20

    prompt = {
        "1": {"class_type": "Forever", "inputs": {"width": 1}},
        "2": {"class_type": "Keep", "inputs": {"value": ["1", 0]}},
    }
    result, events = run(Executor(REGISTRY), prompt, ["2"], context(tmp_path, cancel_check=cancelled))
    assert result.status == "interrupted"
    assert len(events.of("execution_interrupted")) == 1


def test_the_hard_deadline_ends_the_process_unless_cancelled() -> None:
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    exit_after(0.05, 3, _exit=fake_exit)
    assert exited.wait(5) and codes == [3]
    spared = exit_after(0.05, 4, _exit=fake_exit)
    spared.cancel()
    spared.join(1)
    assert codes == [3]


def _check(value: int, class_type: str = "AsyncChecked") -> Any:
    prompt = {"1": {"class_type": class_type, "inputs": {"value": value}}}
    return validate_prompt(prompt, SPECS, node_classes=REGISTRY.classes)


def test_async_validate_inputs_is_awaited() -> None:
    assert _check(3).ok
    refused = _check(-1)
    assert not refused.ok
    assert refused.node_errors["1"]["errors"] == [
        {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": "value - value must not be negative",
            "extra_info": {},
        }
    ]


def test_async_validate_inputs_is_awaited_from_inside_a_running_loop() -> None:
    async def inside() -> Any:
        return _check(-1)

    assert not asyncio.run(inside()).ok


def test_an_execution_blocker_from_validate_inputs_counts_as_valid() -> None:
    assert _check(-1, "BlockerChecked").ok


def test_a_registry_catalog_carries_the_classes_whose_hooks_validation_runs() -> None:
    catalog = Catalog.from_registry(REGISTRY)
    assert catalog.node_classes["AsyncChecked"] is AsyncChecked
    assert Catalog(SPECS).node_classes == {}
    assert Catalog({}, REGISTRY.classes).node_classes == {}  # only classes the catalog has specs for
