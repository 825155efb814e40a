"""Run one workflow into a directory: validate against the live registry, execute, list the files it wrote.

:func:`execute_workflow` is the built-in backend's run (``comfyserve.worker.builtin_backend``);
:func:`run_workflow` adds the local run report ``manifest.json`` for ``comfyserve run``, written last, so a
reader that sees it knows every output it lists is complete. (A job's manifest is a different document, the
``JobManifest`` contract, whose outputs are published keys rather than local files.)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyserve.engine.context import RunContext
from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.executor import ExecutionResult, Executor
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.validation import LOCAL_LIMITS, Limits, ValidationResult, validate_prompt
from comfyserve.worker.outputs import LocalOutput

MANIFEST = "manifest.json"
EventSink = Callable[[str, dict[str, Any]], None]


class WorkflowInvalid(ComfyServeError):
    """The workflow failed validation; ``result`` holds ComfyUI's error shape."""

    def __init__(self, result: ValidationResult) -> None:
        self.result = result
        error = result.error or {}
        first = next(iter(result.node_errors.items()), None)
        where = ""
        if first is not None:
            node_id, entry = first
            err = entry["errors"][0]
            where = f": node {node_id} ({entry['class_type']}) {err['message']}: {err['details']}"
        super().__init__(f"the workflow is invalid ({error.get('message', 'validation failed')}){where}")


@dataclass
class LocalRun:
    """Where a workflow runs: the output folder, the models it may load, and the input files it may read."""

    out_dir: Path
    models: ModelInventory = field(default_factory=ModelInventory)
    inputs: dict[str, Path] = field(default_factory=dict)
    input_dir: Path | None = None
    limits: Limits = LOCAL_LIMITS  # the service passes its own
    keep_going: bool = False
    targets: list[str] | None = None  # ComfyUI's partial_execution_targets: run only these outputs
    cancel_check: Callable[[], bool] = lambda: False


def execute_workflow(
    prompt: dict[str, Any],
    run: LocalRun,
    registry: NodeRegistry,
    executor: Executor,
    *,
    prompt_id: str | None = None,
    extra_pnginfo: dict[str, Any] | None = None,
    on_event: EventSink | None = None,
) -> tuple[ExecutionResult, ValidationResult]:
    """Validate and execute ``prompt``; :class:`WorkflowInvalid` if it does not validate."""
    validation = validate_prompt(
        prompt,
        registry.specs(),
        inventory=run.models,
        input_names=set(run.inputs) or None,
        targets=run.targets,
        limits=run.limits,
        node_classes=registry.classes,
    )
    if not validation.ok:
        raise WorkflowInvalid(validation)
    run.out_dir.mkdir(parents=True, exist_ok=True)
    context = RunContext(
        output_dir=run.out_dir,
        temp_dir=run.out_dir / "temp",
        input_dir=run.input_dir or run.out_dir / "input",
        inputs=dict(run.inputs),
        models=run.models,
        prompt=validation.prompt,
        extra_pnginfo=extra_pnginfo,
        cancel_check=run.cancel_check,
        max_pixels=run.limits.max_pixels,
    )
    result = executor.execute(
        validation.prompt,
        validation.outputs,
        context=context,
        prompt_id=prompt_id or uuid.uuid4().hex,
        on_event=on_event,
        keep_going=run.keep_going,
    )
    return result, validation


def run_workflow(
    prompt: dict[str, Any],
    run: LocalRun,
    registry: NodeRegistry,
    executor: Executor,
    *,
    prompt_id: str | None = None,
    extra_pnginfo: dict[str, Any] | None = None,
    on_event: EventSink | None = None,
) -> tuple[ExecutionResult, dict[str, Any]]:
    """Validate and execute ``prompt``; returns the execution result and the run report it wrote."""
    started = time.perf_counter()
    result, validation = execute_workflow(
        prompt, run, registry, executor, prompt_id=prompt_id, extra_pnginfo=extra_pnginfo, on_event=on_event
    )
    manifest = build_manifest(result, validation, run.out_dir, time.perf_counter() - started)
    write_json_atomic(run.out_dir / MANIFEST, manifest)
    return result, manifest


def output_files(result: ExecutionResult, out_dir: Path) -> list[LocalOutput]:
    """The files the run's output nodes list in their UI (``images``, ``gifs``, ``audio`` …), in order."""
    files = []
    for node_id, ui in result.ui_outputs.items():
        for items in ui.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and isinstance(item.get("filename"), str):
                    temp = item.get("type") == "temp"
                    folder = out_dir / "temp" if temp else out_dir
                    subfolder = str(item.get("subfolder") or "")
                    name = f"{subfolder}/{item['filename']}" if subfolder else item["filename"]
                    files.append(LocalOutput(node_id, folder / name, name, "temp" if temp else "output"))
    return files


def build_manifest(
    result: ExecutionResult, validation: ValidationResult, out_dir: Path, wall_s: float
) -> dict[str, Any]:
    outputs = []
    for node_id, ui in result.ui_outputs.items():
        for image in ui.get("images", []):
            folder = out_dir / "temp" if image.get("type") == "temp" else out_dir
            path = folder / image.get("subfolder", "") / image["filename"]
            outputs.append({"node_id": node_id, **image, "path": str(path), "size": _size(path)})
    return {
        "prompt_id": result.prompt_id,
        "status": result.status,
        "outputs": outputs,
        "node_errors": validation.node_errors,
        "errors": result.errors,
        "timings": {
            "total_s": round(wall_s, 6),
            "nodes": {k: round(v, 6) for k, v in result.timings.items()},
        },
        "executed": result.executed,
        "cached": result.cached,
    }


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def write_json_atomic(path: Path, document: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
