"""The built-in engine as a :class:`~comfyserve.worker.backend.Backend`: the node registry, its executor (kept
warm across jobs; its output cache replays a cached output node's files into the new job's folders) and
validation against the live registry."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfyserve.contracts.jobs import JobError
from comfyserve.engine.cache import CachePolicy
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.executor import Executor
from comfyserve.engine.file_cache import FileReplayCache
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import NodeRegistry
from comfyserve.engine.report import ExecutionResult
from comfyserve.engine.validation import Limits
from comfyserve.model_store.tiers import recording
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.outputs import non_file_ui
from comfyserve.worker.run_local import LocalRun, WorkflowInvalid, execute_workflow, output_files

log = logging.getLogger(__name__)


class BuiltinBackend:
    name = "builtin"

    def __init__(
        self,
        registry: NodeRegistry | None = None,
        *,
        models: ModelInventory | None = None,
        limits: Limits | None = None,
        node_packs: Sequence[str] | None = None,
        custom_nodes: Sequence[Path] = (),
        cache: CachePolicy = CachePolicy(),
    ) -> None:
        """``registry`` as given, or built on :meth:`start` from ``node_packs`` (default: every built-in pack)
        and the ``custom_nodes`` folders; ``cache`` bounds the output cache as ComfyUI's options do."""
        self.registry = registry
        self.models = models or ModelInventory()
        self.limits = limits or Limits()
        self._node_packs = node_packs
        self._custom_nodes = tuple(custom_nodes)
        self._cache = cache
        self._executor: Executor | None = None

    def start(self) -> None:
        if self.registry is None:
            from comfyserve.engine.registry import build_registry
            from comfyserve.nodes import BUILTIN_PACKS

            self.registry = build_registry(self._node_packs or BUILTIN_PACKS, custom_nodes=self._custom_nodes)
            for failure in self.registry.failures:
                log.warning("skipped node pack %s: %s", failure.pack, failure.error)
        if self._executor is None:
            self._executor = Executor(self.registry, cache=FileReplayCache(self._cache.max_entries))

    def run(self, job: BackendJob) -> BackendResult:
        self.start()
        assert self.registry is not None and self._executor is not None
        out_dir = job.work_dir / "out"
        local = LocalRun(
            out_dir=out_dir,
            models=self.models,
            inputs=job.inputs,
            input_dir=job.work_dir / "input",
            limits=self.limits,
            targets=job.targets,
            cancel_check=job.cancel_check,
        )
        try:
            with recording() as loads:
                result, _ = execute_workflow(
                    job.prompt,
                    local,
                    self.registry,
                    self._executor,
                    prompt_id=job.job_id,
                    extra_pnginfo=job.extra_pnginfo,
                    on_event=job.on_event,
                )
        except WorkflowInvalid as exc:
            return BackendResult(status="error", error=invalid_error(exc))
        return BackendResult(
            status=result.status,
            outputs=[output for output in output_files(result, out_dir) if output.path.is_file()],
            ui={node: values for node, ui in result.ui_outputs.items() if (values := non_file_ui(ui))},
            per_node_s=dict(result.timings),
            executed=list(result.executed),
            cached=list(result.cached),
            error=execution_error(result) if result.status == "error" else None,
            model_loads=list(loads),
        )

    def object_info(self) -> dict[str, Any]:
        self.start()
        assert self.registry is not None
        return Catalog.from_registry(self.registry).to_object_info()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None


def invalid_error(exc: WorkflowInvalid) -> JobError:
    """The job error for a workflow the live registry rejects (ComfyUI's error ``type``, e.g.
    ``prompt_outputs_failed_validation``, and its first node error)."""
    error = exc.result.error or {}
    first: tuple[str, dict[str, Any]] | None = next(iter(exc.result.node_errors.items()), None)
    return JobError(
        type=str(error.get("type", "invalid_prompt")),
        message=str(exc),
        node_id=first[0] if first else None,
        node_type=first[1].get("class_type") if first else None,
    )


def execution_error(result: ExecutionResult) -> JobError:
    """The job error for a run that failed: the first ``execution_error``'s exception and node."""
    details: dict[str, Any] = result.errors[0] if result.errors else {}
    return JobError(
        type=str(details.get("exception_type") or "execution_error"),
        message=str(details.get("exception_message") or "the workflow did not complete").strip(),
        node_id=details.get("node_id"),
        node_type=details.get("node_type"),
    )
