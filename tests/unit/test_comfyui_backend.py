"""The ComfyUI backend against a fake ComfyUI (tests/unit/fake_comfyui/main.py): a real child process speaking
ComfyUI's HTTP and websocket protocol on loopback, with errors, hangs and crashes on demand."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from PIL import Image

from comfyserve.cli import main
from comfyserve.engine.cache import CachePolicy
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig, ComfyUIError, ComfyUIRestarted

FAKE_DIR = Path(__file__).parent / "fake_comfyui"
PNG = b"\x89PNG\r\n\x1a\n-input-"


def prompt(mode: str = "ok", *, image: str | None = None, extra_kinds: bool = False) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "2": {"class_type": "FakeGenerate", "inputs": {"mode": mode, "steps": 3}},
        "3": {"class_type": "FakeSave", "inputs": {"images": ["2", 0], "filename_prefix": "ComfyUI"}},
    }
    if image is not None:
        nodes["1"] = {"class_type": "FakeLoad", "inputs": {"image": image}}
        nodes["2"]["inputs"]["image"] = ["1", 0]
    if extra_kinds:
        nodes["3"]["inputs"]["extra_kinds"] = True
    return nodes


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, data))

    def names(self) -> list[str]:
        return [event for event, _ in self.events]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    (root / "checkpoints").mkdir()
    return root


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[ComfyUIBackend]:
    custom = tmp_path_factory.mktemp("custom_nodes")
    config = ComfyUIConfig(
        comfyui_dir=FAKE_DIR,
        work_dir=tmp_path_factory.mktemp("work"),
        model_root=models,
        custom_nodes=(custom,),
        ready_timeout_s=30,
        interrupt_grace_s=1.0,
        ping_s=0.5,
    )
    backend = ComfyUIBackend(config)
    backend.start()
    yield backend
    backend.close()


def job(tmp_path: Path, nodes: dict[str, Any], **fields: Any) -> BackendJob:
    return BackendJob(job_id=f"job-{time.monotonic_ns()}", prompt=nodes, work_dir=tmp_path / "job", **fields)


def test_starts_comfyui_on_loopback_with_the_workers_folders(backend: ComfyUIBackend, models: Path) -> None:
    folders = backend.process.folders
    argv = json.loads((folders.root / "fake-argv.json").read_text())
    assert argv[argv.index("--listen") + 1] == "127.0.0.1"
    assert "--disable-auto-launch" in argv
    assert argv[argv.index("--input-directory") + 1] == str(folders.input)
    assert argv[argv.index("--output-directory") + 1] == str(folders.output)
    # ComfyUI appends /temp to --temp-directory: its temp folder is the one the backend collects previews from
    assert Path(argv[argv.index("--temp-directory") + 1]) / "temp" == folders.temp
    assert "--cache-lru" not in argv and "--cache-none" not in argv  # ComfyUI's own classic cache
    paths = json.loads(Path(argv[argv.index("--extra-model-paths-config") + 1]).read_text())
    assert paths["comfyserve_models"]["base_path"] == str(models.resolve())
    assert paths["comfyserve_models"]["checkpoints"] == "checkpoints"
    custom = backend.config.custom_nodes[0]
    assert paths["comfyserve_custom_nodes_0"] == {"base_path": str(custom.parent), "custom_nodes": custom.name}


def test_a_job_runs_with_its_inputs_and_every_output_file_is_collected(backend: ComfyUIBackend, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    events = Recorder()
    run = job(tmp_path, prompt(image="photo.png", extra_kinds=True), inputs={"photo.png": photo}, on_event=events)
    result = backend.run(run)

    assert result.status == "success", result.error
    preview = result.outputs[1].relative_name
    assert re.fullmatch(r"ComfyUI_temp_fake_[0-9a-f]{5}_00001_\.png", preview)
    assert [(o.node_id, o.relative_name, o.type) for o in result.outputs] == [
        ("3", "ComfyUI_00001_.png", "output"),
        ("3", preview, "temp"),  # a PreviewImage-style file from ComfyUI's temp folder
        ("3", "ComfyUI_00001_.flac", "output"),
        ("3", "ComfyUI_00001_.mp4", "output"),
    ]
    assert all(o.path.is_file() and o.path.is_relative_to(run.work_dir / "out") for o in result.outputs)
    assert result.outputs[2].path.read_bytes() == b"flac"
    assert result.ui == {"3": {"text": ["not a file"]}}  # the non-file UI output, files left out
    assert result.executed == ["2", "3", "1"]  # the fake runs nodes in prompt order
    assert set(result.per_node_s) == {"1", "2", "3"}
    names = events.names()
    assert names[:2] == ["execution_start", "execution_cached"]
    assert names.count("progress") == 3 and names.count("progress_state") == 3
    assert names[-2:] == ["execution_success", "executing"]  # the end of the prompt: ComfyUI's history is written
    assert events.events[-1][1] == {"node": None, "prompt_id": run.job_id}
    assert all(data["prompt_id"] == run.job_id for _, data in events.events)
    executed = next(data for event, data in events.events if event == "executed")
    assert executed["output"]["images"][0] == {"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}
    # per-job state is freed: the inputs removed, the history entry deleted; only the files ComfyUI's cache
    # names (this job's, for the next job with the same output node) are kept
    folders = backend.process.folders
    assert [p.name for p in folders.input.iterdir()] == []
    assert sorted(p.name for p in folders.output.iterdir()) == [
        "ComfyUI_00001_.flac",
        "ComfyUI_00001_.mp4",
        "ComfyUI_00001_.png",
    ]
    assert [p.name for p in folders.temp.iterdir()] == [preview]
    assert backend.process.client is not None and backend.process.client.history(run.job_id) == {}


def test_the_png_carries_the_prompt_as_submitted_and_a_rerun_writes_the_same_bytes(
    backend: ComfyUIBackend, tmp_path: Path
) -> None:
    nodes = prompt()
    nodes["2"]["inputs"]["steps"] = 5  # not the previous test's prompt: nothing cached
    first = backend.run(job(tmp_path / "a", nodes))
    with Image.open(first.outputs[0].path) as image:
        assert json.loads(image.info["prompt"]) == nodes  # no rewritten prefix, no added input
    backend.process.kill()  # a retried job runs on a restarted ComfyUI
    backend.start()
    again = backend.run(job(tmp_path / "b", nodes))
    assert again.executed == ["2", "3"] and again.cached == []
    assert [o.relative_name for o in again.outputs] == [o.relative_name for o in first.outputs]
    assert again.outputs[0].path.read_bytes() == first.outputs[0].path.read_bytes()


def test_previews_and_outputs_do_not_pile_up(backend: ComfyUIBackend, tmp_path: Path) -> None:
    folders = backend.process.folders
    for index in range(3):
        nodes = prompt(extra_kinds=True)
        nodes["3"]["inputs"]["filename_prefix"] = f"run{index}"
        assert backend.run(job(tmp_path / str(index), nodes)).status == "success"
    assert sorted(p.name for p in folders.output.iterdir()) == [
        "run2_00001_.flac",
        "run2_00001_.mp4",
        "run2_00001_.png",
    ]
    assert len(list(folders.temp.iterdir())) == 1
    failed = backend.run(job(tmp_path / "failed", prompt("error")))
    assert failed.status == "error"
    assert list(folders.output.iterdir()) == list(folders.temp.iterdir()) == []


def test_the_same_process_serves_the_next_job_with_the_same_output_names(
    backend: ComfyUIBackend, tmp_path: Path
) -> None:
    pid = backend.process.pid
    first = backend.run(job(tmp_path / "a", prompt()))
    second = backend.run(job(tmp_path / "b", prompt()))
    assert (
        [o.relative_name for o in first.outputs] == [o.relative_name for o in second.outputs] == ["ComfyUI_00001_.png"]
    )
    assert second.cached == ["2", "3"] and second.executed == []  # ComfyUI served the output node from its cache
    assert second.outputs[0].path.read_bytes() == first.outputs[0].path.read_bytes()  # its files, still there
    assert backend.process.pid == pid


def test_cache_none_is_passed_to_comfyui_and_every_job_runs_every_node(tmp_path: Path) -> None:
    config = ComfyUIConfig(comfyui_dir=FAKE_DIR, work_dir=tmp_path, ready_timeout_s=30, cache=CachePolicy(none=True))
    backend = ComfyUIBackend(config)
    try:
        first = backend.run(job(tmp_path / "a", prompt()))
        second = backend.run(job(tmp_path / "b", prompt()))
        argv = json.loads((backend.process.folders.root / "fake-argv.json").read_text())
        output = sorted(p.name for p in backend.process.folders.output.iterdir())
    finally:
        backend.close()
    assert "--cache-none" in argv
    assert second.cached == [] and second.executed == ["2", "3"]
    assert [o.relative_name for o in second.outputs] == [o.relative_name for o in first.outputs]
    assert output == []  # nothing cached, so no file kept


def test_an_input_named_outside_the_input_folder_fails_the_job_before_comfyui_sees_it(
    backend: ComfyUIBackend, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    events = Recorder()
    result = backend.run(job(tmp_path, prompt(image="../photo.png"), inputs={"../photo.png": photo}, on_event=events))
    assert result.status == "error" and result.error is not None
    assert (result.error.type, result.error.message) == (
        "invalid_input",
        "input '../photo.png' is not a relative path inside ComfyUI's input folder",
    )
    assert not (backend.process.folders.root / "photo.png").exists()
    assert events.events == []  # never queued: ComfyUI said nothing about it


def test_a_node_failure_is_the_jobs_error(backend: ComfyUIBackend, tmp_path: Path) -> None:
    result = backend.run(job(tmp_path, prompt("error")))
    assert result.status == "error"
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("execution_error", "RuntimeError: boom")
    assert (result.error.node_id, result.error.node_type) == ("2", "FakeGenerate")
    assert result.outputs == []


def test_a_missing_input_file_fails_in_comfyui_not_in_the_backend(backend: ComfyUIBackend, tmp_path: Path) -> None:
    result = backend.run(job(tmp_path, prompt(image="never-supplied.png")))
    assert result.status == "error" and result.error is not None
    assert result.error.message == "RuntimeError: Invalid image file: never-supplied.png"


def test_a_prompt_comfyui_refuses_is_an_error_with_comfyuis_type(backend: ComfyUIBackend, tmp_path: Path) -> None:
    nodes = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    result = backend.run(job(tmp_path, nodes))
    assert result.status == "error" and result.error is not None
    assert result.error.type == "invalid_prompt"
    assert result.error.message == "Cannot execute because node NoSuchNode does not exist.: Node ID '#1'"


def test_cancelling_interrupts_the_prompt_and_keeps_the_process(backend: ComfyUIBackend, tmp_path: Path) -> None:
    pid = backend.process.pid
    deadline = time.monotonic() + 0.3
    events = Recorder()
    result = backend.run(
        job(tmp_path, prompt("slow"), cancel_check=lambda: time.monotonic() > deadline, on_event=events)
    )
    assert result.status == "interrupted"
    assert "execution_interrupted" in events.names()
    assert backend.process.pid == pid
    assert backend.run(job(tmp_path / "next", prompt())).status == "success"


def test_a_hung_comfyui_is_killed_and_restarted_and_the_job_given_back(backend: ComfyUIBackend, tmp_path: Path) -> None:
    pid, starts = backend.process.pid, backend.process.starts
    with pytest.raises(ComfyUIRestarted, match=r"did not stop the prompt within 1\.0 s"):
        backend.run(job(tmp_path, prompt("hang"), cancel_check=lambda: True))
    assert backend.process.alive() and backend.process.pid != pid
    assert backend.process.starts == starts + 1
    assert backend.run(job(tmp_path / "next", prompt())).status == "success"


def freeze_when_running(backend: ComfyUIBackend, frozen: list[float]) -> Callable[[str, dict[str, Any]], None]:
    """An event sink that freezes ComfyUI (SIGSTOP: it answers nothing more) at the prompt's first progress."""

    def record(event: str, data: dict[str, Any]) -> None:
        if event == "progress" and not frozen and backend.process.pid is not None:
            os.kill(backend.process.pid, signal.SIGSTOP)
            frozen.append(time.monotonic())

    return record


@pytest.mark.parametrize(
    ("cancel", "why"),
    [(True, r"did not answer /interrupt within 1\.0 s"), (False, r"answered no websocket ping within 0\.5 s")],
)
def test_a_frozen_comfyui_is_caught_within_the_grace_or_the_ping(
    backend: ComfyUIBackend, tmp_path: Path, cancel: bool, why: str
) -> None:
    """At a job's deadline (cancel) the /interrupt call waits no longer than the grace period; without one, the
    websocket's keep-alive ping notices within three times ``ping_s``."""
    pid = backend.process.pid
    frozen: list[float] = []
    caught: list[float] = []
    real_kill = backend.process.kill

    def kill() -> None:
        caught.append(time.monotonic())
        real_kill()

    run = job(tmp_path, prompt("slow"), cancel_check=lambda: cancel and bool(frozen))
    with mock.patch.object(backend.process, "kill", kill), pytest.raises(ComfyUIRestarted, match=why):
        backend.run(BackendJob(**{**run.__dict__, "on_event": freeze_when_running(backend, frozen)}))
    assert caught[0] - frozen[0] < 2.0  # the grace (1 s), or a ping, its timeout and the close (0.5 s each)
    assert backend.process.alive() and backend.process.pid != pid
    assert backend.run(job(tmp_path / "next", prompt())).status == "success"


def test_a_crash_mid_job_restarts_comfyui_and_the_job_runs_once_after(backend: ComfyUIBackend, tmp_path: Path) -> None:
    pid = backend.process.pid
    released = job(tmp_path, prompt("crash_once"))
    with pytest.raises(ComfyUIRestarted, match=r"exited|closed|stopped answering"):
        backend.run(released)
    assert backend.process.alive() and backend.process.pid != pid
    again = backend.run(released)  # the worker released the job; its next delivery runs it
    assert again.status == "success"
    assert [o.relative_name for o in again.outputs] == ["ComfyUI_00001_.png"]


def test_runs_from_two_threads_are_not_mixed(backend: ComfyUIBackend, tmp_path: Path) -> None:
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        results[name] = backend.run(job(tmp_path / name, prompt()))

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {name: r.status for name, r in results.items()} == {"a": "success", "b": "success"}


def test_object_info_is_the_catalog_comfyui_serves(backend: ComfyUIBackend) -> None:
    catalog = backend.object_info()
    assert sorted(catalog) == ["FakeGenerate", "FakeLoad", "FakeSave"]
    assert catalog["FakeSave"]["output_node"] is True


def test_the_catalog_command_exports_what_comfyui_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    allow = tmp_path / "allow.txt"
    allow.write_text("FakeLoad\nFakeSave\n")
    assert main(["catalog", "--from-comfyui", str(FAKE_DIR), "--allow", str(allow)]) == 0
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)) == ["FakeLoad", "FakeSave"]
    assert captured.err == "comfyserve catalog: ComfyUI could not import node pack /somewhere/custom_nodes/BrokenPack\n"


def test_a_comfyui_that_cannot_start_is_reported_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_COMFYUI_FAIL_START", "1")
    backend = ComfyUIBackend(ComfyUIConfig(comfyui_dir=FAKE_DIR, work_dir=tmp_path, ready_timeout_s=30))
    with pytest.raises(ComfyUIError, match="exited with code 7 while starting:\nfake ComfyUI: failing at start"):
        backend.start()
    assert not backend.process.alive()


def test_a_folder_that_is_not_comfyui_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ComfyUIError, match=f"{tmp_path} is not a ComfyUI checkout"):
        ComfyUIBackend(ComfyUIConfig(comfyui_dir=tmp_path, work_dir=tmp_path))


def test_close_stops_comfyui(tmp_path: Path) -> None:
    backend = ComfyUIBackend(ComfyUIConfig(comfyui_dir=FAKE_DIR, work_dir=tmp_path, ready_timeout_s=30))
    backend.start()
    process = backend.process
    pid = process.pid
    backend.close()
    assert not process.alive() and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_comfyui_dies_with_a_worker_killed_by_sigkill(tmp_path: Path) -> None:
    script = (
        "import sys, time; from pathlib import Path;"
        "from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig;"
        f"b = ComfyUIBackend(ComfyUIConfig(comfyui_dir=Path({str(FAKE_DIR)!r}), work_dir=Path({str(tmp_path)!r})));"
        "b.start(); print(b.process.pid, flush=True); time.sleep(60)"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    comfyui_pid = int(worker.stdout.readline())
    os.kill(comfyui_pid, 0)  # running
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(comfyui_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(comfyui_pid, signal.SIGKILL)
    pytest.fail("ComfyUI outlived its worker")
