"""``comfyserve serve`` as a real process: a refused start writes nothing; the console has one line per job
state change; model names are checked against the default models folder; a second Ctrl-C stops at once; and
when serve is killed with SIGKILL (no chance to stop anything), its workers notice their parent is gone and
exit within seconds instead of taking jobs for a stack that no longer runs."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.stack_helpers import ROOT, STACK_NODES, Api, wait_for, wait_workflow

KEY = "alice-key"
SERVE = [sys.executable, "-m", "comfyserve", "serve"]

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


def env(keys: str = f"alice:{KEY}") -> dict[str, str]:
    return {**os.environ, "COMFYSERVE_API_KEYS": keys}


@pytest.mark.parametrize(
    ("args", "keys", "error"),
    [
        ([], "alice:ok-key,hunter2-secret-value", "API key entry 2 is not 'tenant:key'"),  # without the secret
        (["--cache-lru", "0"], f"alice:{KEY}", "--cache-lru needs a number of node results of at least 1, got 0"),
    ],
)
def test_a_refused_start_is_one_line_and_nothing_is_written(
    tmp_path: Path, args: list[str], keys: str, error: str
) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [*SERVE, "--port", "0", "--data", str(data), *args],
        cwd=ROOT,
        env=env(keys),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"comfyserve serve: {error}\n"
    assert not data.exists()


def test_a_busy_port_is_one_line_and_leaves_no_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "--port", str(port), "--data", str(data)],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"comfyserve serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not data.exists()


class Serve:
    """A ``comfyserve serve`` subprocess whose stdout lines are read by a thread."""

    def __init__(self, data: Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [*SERVE, "--port", "0", "--data", str(data), *options],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line()
        assert first.startswith("comfyserve serving on http://127.0.0.1:"), first
        self.url = first.split()[3]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout_s: float = 60) -> str:
        return self.lines.get(timeout=timeout_s)

    def line_with(self, text: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.next_line(max(0.1, deadline - time.monotonic()))
            if text in line:
                return line


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    running = Serve(tmp_path / "data", "--workers", "1", "--custom-nodes", str(STACK_NODES))
    yield running
    running.process.kill()
    running.process.wait()


def test_serve_prints_job_state_changes_checks_models_and_stops_at_once_on_a_second_ctrl_c(
    serve: Serve, tmp_path: Path
) -> None:
    assert (
        serve.line_with("models: ")
        == f"models: {tmp_path / 'data' / 'models'} (checkpoints/, loras/, vae/ …; read when serve starts)"
    )
    assert (tmp_path / "data" / "models").is_dir()
    missing = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
    }
    refused = requests.post(f"{serve.url}/prompt", json={"prompt": missing}, headers={"x-api-key": KEY}, timeout=10)
    assert refused.status_code == 400, refused.text
    (error,) = refused.json()["node_errors"]["1"]["errors"]
    assert error["type"] == "value_not_in_list"
    api = Api(serve.url, KEY)
    assert requests.get(f"{serve.url}/v1/jobs", headers={"x-api-key": KEY}, timeout=10).json()["jobs"] == []

    job_id = api.submit(wait_workflow(0.1, prefix="console"))
    for word in ("queued", "started", "succeeded"):
        assert serve.line_with(f"job {job_id} ").endswith(f"job {job_id} (tenant alice) {word}")

    long_job = api.submit(wait_workflow(60.0, prefix="long", color=9))
    serve.line_with(f"job {long_job} (tenant alice) started")
    serve.process.send_signal(signal.SIGINT)
    assert serve.line_with("stopping") == "stopping: draining workers (Ctrl-C again to stop at once)…"
    serve.process.send_signal(signal.SIGINT)
    assert serve.process.wait(timeout=10) == 0
    assert serve.line_with("stopped") == "stopped at once: the jobs the workers held run again at the next start"


def test_workers_exit_when_serve_is_killed(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [*SERVE, "--port", "0", "--workers", "2", "--data", str(tmp_path)],
        cwd=ROOT,
        env=env(),
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
