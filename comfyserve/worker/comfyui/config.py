"""Where ComfyUI is and how the worker runs it; the errors of the ComfyUI backend."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from comfyserve.engine.cache import CachePolicy
from comfyserve.engine.errors import ComfyServeError
from comfyserve.worker.backend import BackendRestarted

VENV_PYTHONS = ("venv/bin/python", ".venv/bin/python")


class ComfyUIError(ComfyServeError):
    """ComfyUI could not be started, or answered in a way the backend cannot use."""


class ComfyUIRestarted(BackendRestarted):
    """ComfyUI died or hung while running a job and was restarted; the job is to be released, not failed."""


def default_python(comfyui_dir: Path) -> Path:
    """The checkout's own environment (``venv/bin/python`` or ``.venv/bin/python``), else this Python."""
    for relative in VENV_PYTHONS:
        candidate = comfyui_dir / relative
        if candidate.exists():
            return candidate
    return Path(sys.executable)


@dataclass(frozen=True)
class ComfyUIConfig:
    """``work_dir`` holds ComfyUI's input, output, temp and user folders and the ``extra_model_paths.yaml`` the
    worker writes; ``model_root`` is mapped as ComfyUI's model folders (``checkpoints/``, ``loras/`` …);
    ``custom_nodes`` are extra custom-node folders (ComfyUI's own ``custom_nodes/`` is always loaded).
    ``cpu`` None adds ``--cpu`` on a machine without an NVIDIA device."""

    comfyui_dir: Path
    work_dir: Path
    python: Path | None = None
    model_root: Path | None = None
    custom_nodes: tuple[Path, ...] = ()
    extra_args: tuple[str, ...] = ()
    node_allow: tuple[str, ...] | None = None  # the node classes the published catalog keeps (None: all)
    node_deny: tuple[str, ...] = ()
    cpu: bool | None = None
    ready_timeout_s: float = 300.0
    interrupt_grace_s: float = 15.0  # after POST /interrupt, how long before a silent ComfyUI counts as hung
    ping_s: float = 5.0  # a websocket ping this often; one unanswered for as long means ComfyUI hangs
    cache: CachePolicy = field(default_factory=CachePolicy)  # passed to ComfyUI as its --cache-lru / --cache-none
    host: str = "127.0.0.1"

    @property
    def retained_jobs(self) -> int:
        """How many jobs' files ComfyUI's cache may still name (its classic cache: the previous prompt's)."""
        return 0 if self.cache.none else self.cache.lru or 1

    def checked(self) -> ComfyUIConfig:
        """This config with its paths resolved; raises :class:`ComfyUIError` naming what is missing."""
        main = self.comfyui_dir / "main.py"
        if not main.is_file():
            raise ComfyUIError(f"{self.comfyui_dir} is not a ComfyUI checkout (no main.py)")
        python = self.python or default_python(self.comfyui_dir)
        if not python.exists():
            raise ComfyUIError(f"the ComfyUI Python {python} does not exist")
        if self.model_root is not None and not self.model_root.is_dir():
            raise ComfyUIError(f"the model root {self.model_root} is not a directory")
        for folder in self.custom_nodes:
            if not folder.is_dir():
                raise ComfyUIError(f"the custom nodes folder {folder} is not a directory")
        return ComfyUIConfig(
            comfyui_dir=self.comfyui_dir.resolve(),
            work_dir=self.work_dir.resolve(),
            python=python.absolute(),
            model_root=self.model_root.resolve() if self.model_root is not None else None,
            custom_nodes=tuple(p.resolve() for p in self.custom_nodes),
            extra_args=self.extra_args,
            node_allow=self.node_allow,
            node_deny=self.node_deny,
            cpu=self.cpu if self.cpu is not None else not Path("/dev/nvidiactl").exists(),
            ready_timeout_s=self.ready_timeout_s,
            interrupt_grace_s=self.interrupt_grace_s,
            ping_s=self.ping_s,
            cache=self.cache,
            host=self.host,
        )
