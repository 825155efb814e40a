"""``comfyserve worker``: its help lists every setting with its variable, bad settings fail with their names,
and ``--health`` reads the liveness file the loop touches."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from comfyserve.cli import main
from comfyserve.model_store.settings import ModelStoreSettings
from comfyserve.settings import CloudWorkerSettings

RESOURCES = {
    "COMFYSERVE_BUCKET": "jobs",
    "COMFYSERVE_QUEUE_URL": "http://127.0.0.1:1/q",
    "COMFYSERVE_TABLE": "jobs-table",
    "COMFYSERVE_EVENT_BUS": "comfyserve",
}


def test_help_lists_every_setting_and_its_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["worker", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    for variable, kind, default, _ in CloudWorkerSettings.env_table():
        assert f"  {variable}  ({kind}; {default})" in out
    assert "COMFYUI_DIR" in out and "ECS_AGENT_URI" in out and "COMFYSERVE_DRAIN_TIMEOUT_S" in out


def test_missing_settings_fail_with_their_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in RESOURCES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COMFYSERVE_DRAIN_TIMEOUT_S", "-1")

    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("comfyserve worker: COMFYSERVE_BUCKET is required; COMFYSERVE_QUEUE_URL is required")
    assert "COMFYSERVE_DRAIN_TIMEOUT_S: input should be greater than or equal to 0, not '-1'" in err


def test_health_reads_the_age_of_the_liveness_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {**RESOURCES, "COMFYSERVE_WORK_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    alive = tmp_path / "alive"

    assert main(["worker", "--health"]) == 1  # not started yet
    alive.touch()
    assert main(["worker", "--health"]) == 0
    stale = time.time() - 121  # defaults: visibility 120 s (extended every 40 s), long polls of 20 s → 120 s
    os.utime(alive, (stale, stale))
    assert main(["worker", "--health"]) == 1


def test_the_model_store_reads_the_workers_variables() -> None:
    """The model store's settings are a view of the worker's: every one of its fields is a worker setting."""
    worker_fields = CloudWorkerSettings.model_fields
    for name in ModelStoreSettings.model_fields:
        assert name in worker_fields, f"COMFYSERVE_{name.upper()} is not a worker setting"
        assert CloudWorkerSettings.env_name(name) == f"COMFYSERVE_{name.upper()}"


@pytest.mark.parametrize(
    ("setting", "make", "message"),
    [
        ("COMFYSERVE_WARMUP_WORKFLOW", lambda root: root / "absent.json", "absent.json: No such file or directory"),
        ("COMFYSERVE_WARMUP_WORKFLOW", lambda root: _write(root / "bad.json", "{"), "the workflow is not valid JSON"),
        ("COMFYSERVE_WORK_DIR", lambda root: _write(root / "file", "") / "work", "work: Not a directory"),
        ("COMFYSERVE_CUSTOM_NODES", lambda root: root / "no-such-pack-folder", "not a folder: "),
    ],
)
def test_unusable_paths_stop_the_worker_before_it_starts(
    setting: str, make: Any, message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: Any
) -> None:
    for name, value in {**RESOURCES, "COMFYSERVE_WORK_DIR": str(tmp_path / "w"), setting: str(make(tmp_path))}.items():
        monkeypatch.setenv(name, value)

    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"comfyserve worker: {setting}") and message in err
    assert not (tmp_path / "w" / "alive").exists()  # nothing started


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
