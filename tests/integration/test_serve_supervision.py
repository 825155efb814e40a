"""``comfyserve serve`` as a real process: when it is killed with SIGKILL (no chance to stop anything), its
worker processes notice their parent is gone and exit within seconds instead of taking jobs for a stack that
no longer runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stack_helpers import ROOT, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")


def worker_pids(parent: int) -> set[int]:
    """The multiprocessing (spawn) children of ``parent``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_serve_is_killed(tmp_path: Path) -> None:
    env = {**os.environ, "COMFYSERVE_API_KEYS": "alice:alice-key"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "comfyserve", "serve", "--port", "0", "--workers", "2", "--data", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert serve.stdout is not None
        assert serve.stdout.readline().startswith("comfyserve serving on http://127.0.0.1:")
        workers = wait_for(lambda: worker_pids(serve.pid) if len(worker_pids(serve.pid)) == 2 else None)
        serve.send_signal(signal.SIGKILL)
        serve.wait(timeout=5)

        wait_for(lambda: not any(alive(pid) for pid in workers), timeout_s=10, what=f"workers {workers} to exit")
    finally:
        serve.kill()
        serve.wait()
