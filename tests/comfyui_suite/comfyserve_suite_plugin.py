"""pytest plugin that runs ComfyUI's own ``tests/execution`` suite against ``comfyserve serve``.

ComfyUI's tests start their server with ``subprocess.Popen(['python', 'main.py', ...])`` and stop it with
``p.kill()``. This plugin answers exactly that command with ``comfyserve serve`` on the same address, one
worker, a fresh data folder per start, the ``custom_nodes`` folders named in ``--extra-model-paths-config``
and an anonymous tenant (the tests send no key); ``kill()`` ends the whole process group (the server and its
worker). Every other command runs unchanged. In the test process the ``comfy_execution`` imports of the
tests resolve to :mod:`comfyserve.compat`, so no ComfyUI code runs anywhere. Used by
``make test-comfyui-suite``; never part of ``make test``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from comfyserve import compat

_REAL_POPEN = subprocess.Popen
SERVE_LOG = os.environ.get("COMFYSERVE_SUITE_LOG")  # append each server's output here when set


def _option(argv: list[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def custom_node_folders(config: str) -> list[Path]:
    """The ``custom_nodes`` entries of an extra-model-paths yaml, relative to the yaml's folder."""
    path = Path(config).resolve()
    document = yaml.safe_load(path.read_text()) or {}
    folders = []
    for section in document.values():
        if not isinstance(section, dict):
            continue
        base = Path(section.get("base_path") or path.parent)
        for entry in str(section.get("custom_nodes") or "").split("\n"):
            if entry.strip():
                folders.append((path.parent / base / entry.strip()).resolve())
    return folders


def serve_command(argv: list[str], data_dir: Path) -> list[str]:
    """``comfyserve serve`` for ComfyUI's ``main.py`` arguments."""
    command = [sys.executable, "-m", "comfyserve", "serve", "--workers", "1", "--anonymous-tenant", "suite"]
    command += ["--host", _option(argv, "--listen", "127.0.0.1"), "--port", _option(argv, "--port", "8188")]
    command += ["--data", str(data_dir)]
    config = _option(argv, "--extra-model-paths-config", "")
    for folder in custom_node_folders(config) if config else []:
        command += ["--custom-nodes", str(folder)]
    return command


class ServeProcess:
    """Stands in for the ``Popen`` of ComfyUI's ``main.py``: ``comfyserve serve`` in a process group of its own."""

    def __init__(self, argv: list[str]) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="comfyserve-suite-"))
        log = open(SERVE_LOG, "ab") if SERVE_LOG else subprocess.DEVNULL  # noqa: SIM115 — kept for the child
        self._process = _REAL_POPEN(
            serve_command(argv, self.data_dir), start_new_session=True, stdout=log, stderr=subprocess.STDOUT
        )
        self.pid = self._process.pid
        self.args = argv

    def poll(self) -> int | None:
        return self._process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._process.wait(timeout)

    def kill(self) -> None:
        """End the server and its workers at once, and remove its data."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    terminate = kill


def _popen(args: Any, *rest: Any, **kwargs: Any) -> Any:
    if isinstance(args, list | tuple) and list(args[:2]) == ["python", "main.py"]:
        return ServeProcess([str(a) for a in args])
    return _REAL_POPEN(args, *rest, **kwargs)


def pytest_configure(config: Any) -> None:
    subprocess.Popen = _popen  # type: ignore[assignment,misc]
    compat.install()
