"""A node pack written for ComfyUI (tests/compat_pack) loads from ``custom_nodes`` through the compat surface
and runs in the executor: comfy.utils, comfy.comfy_types, comfy_execution, comfy_api v0_0_2 and the V3 io
schema, folder_paths, comfy.model_management, server.PromptServer, hidden inputs and rawLink."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from comfyserve.engine.executor import Executor
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validation import validate_prompt
from tests.compat_pack import CUSTOM_NODES
from tests.testpack.harness import context, run

REGISTRY = NodeRegistry()
LOADED = REGISTRY.load_custom_nodes(CUSTOM_NODES)


def test_the_pack_loads_with_comfyuis_module_names() -> None:
    assert not REGISTRY.failures, REGISTRY.failures[0].traceback if REGISTRY.failures else ""
    assert LOADED == ["PackSolid", "PackCheckedFloat", "PackCountdown", "PackReport", "PackScale"]
    import comfyserve.compat.comfy.utils
    import comfyserve.engine.graph_utils

    assert importlib.import_module("comfy.utils") is comfyserve.compat.comfy.utils is sys.modules["comfy.utils"]
    graph_utils = importlib.import_module("comfy_execution.graph_utils")
    assert graph_utils.GraphBuilder is comfyserve.engine.graph_utils.GraphBuilder
    assert REGISTRY.display_names["PackScale"] == "Pack Scale"


def test_io_any_matches_every_type_and_unions_match_subsets() -> None:
    from comfy.comfy_types import IO

    assert not IO.ANY != "IMAGE" and not IO.NUMBER != "INT" and IO.INT != "IMAGE"  # noqa: SIM202 — __ne__ itself
    assert IO.NUMBER != 5


def _prompt(count: int = 2, checked: Any = 7, factor: float = 2.0) -> dict[str, Any]:
    return {
        "solid": {"class_type": "PackSolid", "inputs": {"value": 0.5, "size": 4}},
        "down": {"class_type": "PackCountdown", "inputs": {"count": count, "image": ["solid", 0]}},
        "scale": {"class_type": "PackScale", "inputs": {"image": ["down", 0], "factor": factor, "mode": "multiply"}},
        "check": {"class_type": "PackCheckedFloat", "inputs": {"value": checked}},
        "report": {"class_type": "PackReport", "inputs": {"images": ["scale", 0], "number": ["check", 0]}},
    }


def test_the_pack_runs_in_the_executor(tmp_path: Path) -> None:
    models = ModelInventory.from_listing({"checkpoints": ["a.safetensors"]})
    ctx = context(tmp_path, models=models)
    ctx.output_dir.mkdir(parents=True)
    result, events = run(Executor(REGISTRY), _prompt(), ["report"], ctx)
    assert result.status == "success", result.errors
    # countdown 2 -> expands PackSolid(0.5 * 2 ... ) chains; the final image is the last solid (0.25 * 1), 8x8
    assert result.ui_outputs["report"] == {"text": ["8x8 7"], "device": ["cpu"], "checkpoints": ["a.safetensors"]}
    assert (ctx.output_dir / "pack_report.txt").read_text() == "7"
    assert events.of("pack.hello") == [{"node": "report", "pixels": 8 * 8 * 3}]
    progress = [(p["node"], p["value"], p["max"]) for p in events.of("progress")]
    assert ("solid", 1, 2) in progress and ("solid", 2, 2) in progress and ("report", 0.5, 1.0) in progress
    assert result.ui_outputs["scale"] == {"node": ["scale"]}  # the V3 node read cls.hidden.unique_id


def test_v3_and_async_validation_hooks_run(tmp_path: Path) -> None:
    specs = REGISTRY.specs()
    assert validate_prompt(_prompt(), specs, node_classes=REGISTRY.classes).ok
    refused = validate_prompt(_prompt(checked=-1), specs, node_classes=REGISTRY.classes)
    assert refused.node_errors["check"]["errors"][0]["details"] == "value - negative values are not allowed"
    unlucky = validate_prompt(_prompt(factor=3.0), specs, node_classes=REGISTRY.classes)
    assert unlucky.node_errors["scale"]["errors"][0]["details"] == "factor, mode - 3.0 is unlucky"


def test_an_execution_blocker_from_the_pack_stops_its_consumers_without_failing(tmp_path: Path) -> None:
    prompt = _prompt(count=0)
    del prompt["down"]["inputs"]["image"]
    result, events = run(Executor(REGISTRY), prompt, ["report"], context(tmp_path))
    assert result.status == "success"
    assert "report" not in result.ui_outputs
    assert [e["exception_message"] for e in events.of("execution_error")] == [
        "Execution Blocked: nothing to count down"
    ]


def test_progress_bars_and_interruption_outside_a_job_are_harmless() -> None:
    import comfy.model_management
    from comfy.utils import ProgressBar

    ProgressBar(3, node_id="x").update_absolute(2, 3, preview=None)
    assert not comfy.model_management.processing_interrupted()
    comfy.model_management.throw_exception_if_processing_interrupted()
    assert comfy.model_management.get_torch_device().type in ("cpu", "cuda")
    assert torch.is_tensor(torch.zeros(1))


def test_interruption_inside_a_job_raises(tmp_path: Path) -> None:
    prompt = {k: v for k, v in _prompt().items()}
    result, events = run(Executor(REGISTRY), prompt, ["report"], context(tmp_path, cancel_check=lambda: True))
    assert result.status == "interrupted"
    assert len(events.of("execution_interrupted")) == 1


@pytest.mark.parametrize("name", ["get_output_directory", "get_temp_directory", "get_input_directory"])
def test_folder_paths_outside_a_job_is_a_clear_error(name: str) -> None:
    import folder_paths

    with pytest.raises(RuntimeError, match="no job is running"):
        getattr(folder_paths, name)()


def test_graph_builder_behaves_as_comfyuis() -> None:
    """ComfyUI's own tests edit a node's inputs after ``finalize()`` and remove nodes by id."""
    from comfy_execution.graph_utils import GraphBuilder

    g = GraphBuilder(prefix="t.")
    image = g.node("PackSolid", value=0.5, size=4)
    g.node("PackSolid", value=0.1, size=4)
    prompt = g.finalize()
    image.inputs["size"] = 16
    assert prompt["t.0"]["inputs"]["size"] == 16
    g.remove_node("1")
    assert list(g.finalize()) == ["t.0"] and g.lookup_node("0") is image
