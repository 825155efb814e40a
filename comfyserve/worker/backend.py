"""The execution backend port: how the worker runs one job's workflow.

Two implementations: the built-in engine (``comfyserve.worker.builtin_backend``) and a managed, unmodified
ComfyUI driven over its HTTP and websocket API (``comfyserve.worker.comfyui``). A fleet runs one of them
(``COMFYSERVE_BACKEND=builtin|comfyui``); everything around a run (claim, heartbeat, outputs, manifest,
completion) is the worker loop's and the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from comfyserve.contracts.jobs import JobError
from comfyserve.model_store.tiers import ModelLoad
from comfyserve.worker.outputs import LocalOutput

EventSink = Callable[[str, dict[str, Any]], None]


class BackendRestarted(RuntimeError):
    """The backend lost the job in hand through no fault of the job (its ComfyUI died or hung and was restarted):
    the worker releases the job (``running → queued``, message visible again) instead of failing it."""


@dataclass(frozen=True)
class BackendJob:
    """One run: the workflow, its fetched input files and the job's own scratch folder."""

    job_id: str
    prompt: dict[str, Any]  # API format
    work_dir: Path  # the job's folder; a backend writes under it (input/, out/, temp/) and nowhere else
    inputs: dict[str, Path] = field(default_factory=dict)  # input name (as LoadImage's value) -> local file
    extra_pnginfo: dict[str, Any] | None = None
    targets: list[str] | None = None  # ComfyUI's partial_execution_targets
    cancel_check: Callable[[], bool] = lambda: False  # true once the run must stop (cancel, timeout, drain, lost)
    on_event: EventSink | None = None  # ComfyUI's messages: executing, progress, executed, execution_cached …


@dataclass
class BackendResult:
    """What a run produced. ``status`` is ``error`` with ``error`` set, or ``interrupted`` after a stop."""

    status: Literal["success", "error", "interrupted"]
    outputs: list[LocalOutput] = field(default_factory=list)  # every output file (images, videos, audio …)
    ui: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> its non-file UI output (text …)
    per_node_s: dict[str, float] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: JobError | None = None
    model_loads: list[ModelLoad] = field(default_factory=list)  # the models the run loaded, each with its tier


class Backend(Protocol):
    name: str

    def start(self) -> None:
        """Get ready to run (load packs; spawn ComfyUI and wait until it answers). Idempotent."""
        ...

    def run(self, job: BackendJob) -> BackendResult:
        """Run ``job`` to its end. A workflow the backend refuses is a ``BackendResult`` with status ``error``
        and the validation error (ComfyUI's ``type``, e.g. ``prompt_outputs_failed_validation``)."""
        ...

    def object_info(self) -> dict[str, Any]:
        """The catalog this backend really serves, in ComfyUI's ``/object_info`` shape (model lists included)."""
        ...

    def close(self) -> None:
        """Release everything (stop a child process). Idempotent."""
        ...
