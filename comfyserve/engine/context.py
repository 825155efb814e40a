"""The run context a node sees while it executes: folders, inputs, models, progress and cancellation.

Nodes reach it through :func:`current` (a context variable), the way ComfyUI nodes reach ``folder_paths``
and ``comfy.utils.ProgressBar``; the executor installs one per job with :func:`use`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyserve.engine.errors import InterruptedError_, NodeInputError
from comfyserve.engine.inventory import ModelInventory

ProgressHook = Callable[[int, int], None]


@dataclass
class RunContext:
    """Everything a node may ask of the job it runs in.

    ``inputs`` maps the exact values a ``LoadImage`` may name (a file name or a URL) to local files; a name
    that is not in it is looked up in ``input_dir``.
    """

    output_dir: Path
    temp_dir: Path
    input_dir: Path
    inputs: dict[str, Path] = field(default_factory=dict)
    models: ModelInventory = field(default_factory=ModelInventory)
    prompt: dict[str, Any] | None = None
    extra_pnginfo: dict[str, Any] | None = None
    progress_hook: ProgressHook | None = None
    cancel_check: Callable[[], bool] = lambda: False
    event_sink: Callable[[str, dict[str, Any]], None] | None = None  # the job's event stream, set by the executor
    max_pixels: int | None = None  # the run's pixel cap (Limits.max_pixels), checked by nodes before allocating

    def resolve_input(self, name: str) -> Path:
        """The local file behind a ``LoadImage`` value; never a path outside ``input_dir``."""
        if name in self.inputs:
            return self.inputs[name]
        root = self.input_dir.resolve()
        candidate = (root / name).resolve()
        if not candidate.is_relative_to(root) or name.startswith(("/", "\\")):
            raise NodeInputError(f"input file name {name!r} points outside the input folder")
        if not candidate.is_file():
            raise NodeInputError(f"input file {name!r} was not supplied and is not in the input folder")
        return candidate

    def check_cancelled(self) -> None:
        """Raise when the job was cancelled; long nodes call this between steps."""
        if self.cancel_check():
            raise InterruptedError_("the job was cancelled")

    def progress(self, value: int, total: int) -> None:
        """Report progress inside a long node (for example one sampler step) and honour cancellation."""
        self.check_cancelled()
        if self.progress_hook is not None:
            self.progress_hook(value, total)


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("comfyserve_run", default=None)


def active() -> RunContext | None:
    """The running job's context, or ``None`` outside a job (catalog export, validation)."""
    return _current.get()


def check_pixels(width: int, height: int) -> None:
    """Refuse an image of ``width`` x ``height`` over the running job's pixel cap, before it is allocated
    (validation bounds the sizes it can see; this catches the rest). Outside a job nothing is capped."""
    ctx = _current.get()
    cap = ctx.max_pixels if ctx is not None else None
    if cap is not None and width * height > cap:
        raise NodeInputError(f"{width}x{height} exceeds this service's limit of {cap:,} pixels")


def current() -> RunContext:
    """The context of the job that is running; a node called outside a job gets a clear error."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("no job is running: nodes that need the run context must run inside the executor")
    return ctx


@contextlib.contextmanager
def use(ctx: RunContext) -> Iterator[RunContext]:
    """Install ``ctx`` as the current run context for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


class ProgressBar:
    """ComfyUI-style progress bar for node code: ``bar = ProgressBar(total); bar.update(1)``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.current = 0

    def update(self, value: int = 1) -> None:
        self.update_absolute(self.current + value)

    def update_absolute(self, value: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        ctx = active()
        if ctx is not None:
            ctx.progress(self.current, self.total)
