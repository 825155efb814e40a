"""The managed ComfyUI child process: its folders and model paths, start, readiness, liveness, restart, stop.

ComfyUI runs from its own checkout with its own Python, on loopback at a free port, in its own process group
(so a stop also ends anything it spawned). Its log goes to ``<work_dir>/comfyui.log``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from comfyserve.worker.comfyui.client import ComfyUIClient
from comfyserve.worker.comfyui.config import ComfyUIConfig, ComfyUIError

log = logging.getLogger(__name__)

LOG_NAME = "comfyui.log"
YAML_NAME = "extra_model_paths.yaml"
# ComfyUI's model folder names (folder_paths.py); each maps to the same-named folder of the model root.
MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "vae_approx",
    "text_encoders",
    "clip",
    "diffusion_models",
    "unet",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "controlnet",
    "t2i_adapter",
    "gligen",
    "upscale_models",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2)
IMPORT_FAILED = re.compile(r"IMPORT FAILED\)?: *(\S.*)$")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Folders:
    """ComfyUI's working folders under the worker's work dir."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def temp(self) -> Path:
        return self.root / "temp"

    @property
    def user(self) -> Path:
        return self.root / "user"

    def by_type(self, kind: str) -> Path | None:
        """The folder of an output entry's ``type`` (``output``, ``temp`` or ``input``)."""
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(kind)


def model_paths_document(model_root: Path | None, custom_nodes: tuple[Path, ...]) -> dict[str, dict[str, str]]:
    """The ``extra_model_paths.yaml`` content: the model root's folders, then the custom-node folders."""
    document: dict[str, dict[str, str]] = {}
    if model_root is not None:
        document["comfyserve_models"] = {"base_path": str(model_root), **{name: name for name in MODEL_FOLDERS}}
    for index, folder in enumerate(custom_nodes):
        document[f"comfyserve_custom_nodes_{index}"] = {"base_path": str(folder.parent), "custom_nodes": folder.name}
    return document


def write_model_paths(path: Path, model_root: Path | None, custom_nodes: tuple[Path, ...]) -> None:
    # JSON is YAML: ComfyUI reads it with yaml.safe_load, and this process needs no YAML library.
    path.write_text(json.dumps(model_paths_document(model_root, custom_nodes), indent=2) + "\n", encoding="utf-8")


class ComfyUIProcess:
    def __init__(self, config: ComfyUIConfig) -> None:
        self.config = config
        self.folders = Folders(config.work_dir / "comfyui")
        self.client: ComfyUIClient | None = None
        self.starts = 0
        self.last_start_s = 0.0
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- start ---------------------------------------------------------------------------------------

    def argv(self, port: int) -> list[str]:
        config, folders = self.config, self.folders
        argv = [
            str(config.python),
            "main.py",
            "--listen",
            config.host,
            "--port",
            str(port),
            "--disable-auto-launch",
            "--extra-model-paths-config",
            str(folders.root / YAML_NAME),
            "--input-directory",
            str(folders.input),
            "--output-directory",
            str(folders.output),
            "--temp-directory",  # ComfyUI appends /temp: its temp folder is folders.temp
            str(folders.temp.parent),
            "--user-directory",
            str(folders.user),
            "--database-url",
            f"sqlite:///{folders.user / 'comfyui.db'}",
        ]
        if config.cpu:
            argv.append("--cpu")
        return argv + list(config.cache.comfyui_args()) + list(config.extra_args)

    def start(self) -> None:
        """Spawn ComfyUI and wait until it answers; raises :class:`ComfyUIError` (with its log's tail) if it exits
        or does not answer within ``ready_timeout_s``. Idempotent while it runs."""
        if self.alive():
            return
        self.stop()
        folders = self.folders
        for folder in (folders.input, folders.output, folders.temp, folders.user):
            folder.mkdir(parents=True, exist_ok=True)
        write_model_paths(folders.root / YAML_NAME, self.config.model_root, self.config.custom_nodes)
        port = free_port(self.config.host)
        started = time.perf_counter()
        self._log = (folders.root / LOG_NAME).open("ab")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self._popen = subprocess.Popen(
            self.argv(port),
            cwd=self.config.comfyui_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.client = ComfyUIClient(f"http://{self.config.host}:{port}")
        self._wait_ready(started)
        self.starts += 1
        self.last_start_s = time.perf_counter() - started
        log.info("ComfyUI ready on port %d in %.1f s (pid %d)", port, self.last_start_s, self._popen.pid)

    def _wait_ready(self, started: float) -> None:
        assert self.client is not None
        deadline = started + self.config.ready_timeout_s
        while True:
            if not self.alive():
                code = self._popen.returncode if self._popen is not None else None
                self.stop()
                raise ComfyUIError(f"ComfyUI exited with code {code} while starting:\n{self.log_tail()}")
            if self.client.ready():
                return
            if time.perf_counter() > deadline:
                self.stop()
                raise ComfyUIError(f"ComfyUI did not answer within {self.config.ready_timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.1)

    # -- state ---------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.folders.root / LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def import_failures(self) -> list[str]:
        """The node packs (custom nodes, extras modules) ComfyUI's log says it could not import, by name."""
        try:
            text = (self.folders.root / LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        found = (IMPORT_FAILED.search(line) for line in text.splitlines())
        return list(dict.fromkeys(match.group(1).strip() for match in found if match))

    # -- stop ----------------------------------------------------------------------------------------

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        """SIGTERM to ComfyUI's process group, SIGKILL after a grace period; idempotent."""
        popen, self._popen = self._popen, None
        if popen is not None:
            if popen.poll() is None:
                _signal_group(popen.pid, signal.SIGTERM)
                try:
                    popen.wait(STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    log.warning("ComfyUI (pid %d) ignored SIGTERM; killing it", popen.pid)
            _signal_group(popen.pid, signal.SIGKILL)  # also ends anything it left in its group
            popen.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self.client = None

    def kill(self) -> None:
        """SIGKILL the whole group at once (a hung ComfyUI), then clean up as :meth:`stop` does."""
        if self._popen is not None:
            _signal_group(self._popen.pid, signal.SIGKILL)
        self.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the worker dies (even by SIGKILL), so no orphaned ComfyUI keeps
    a GPU's memory. Linux delivers it when the thread that started ComfyUI ends: the worker starts it from its
    main thread."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
