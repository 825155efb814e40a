"""The worker's start check of the host's NVIDIA driver against the image's CUDA build, with fakes of the driver
query (a fixed answer, a fake ``/proc`` file, a fake ``nvidia-smi`` on PATH)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyserve.cli import main
from comfyserve.worker.driver_check import DriverMismatch, check_driver, host_driver_version

OLD_DRIVER_LINE = (
    "the host's NVIDIA driver 570.172.08 is older than 580.65.06, the oldest that runs this image's CUDA 13.0;"
    " no job taken (run the workers on a host with a newer driver: the ECS GPU AMI on Amazon Linux 2023)"
)


class FakeQuery:
    def __init__(self, answer: str | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return self.answer


def test_an_older_driver_stops_the_worker_naming_both_versions() -> None:
    with pytest.raises(DriverMismatch) as raised:
        check_driver("13.0", "580.65.06", FakeQuery("570.172.08"))
    assert str(raised.value) == OLD_DRIVER_LINE


@pytest.mark.parametrize(("found", "needed"), [("580.65.06", "580.65.06"), ("580.95.05", "580"), ("590.1", "580")])
def test_a_driver_at_or_above_the_minimum_passes(found: str, needed: str) -> None:
    assert check_driver("13.0", needed, FakeQuery(found)) == found


def test_without_a_cuda_version_the_line_still_names_both_driver_versions() -> None:
    with pytest.raises(DriverMismatch) as raised:
        check_driver(None, "580", FakeQuery("575.57.08"))
    assert str(raised.value).startswith(
        "the host's NVIDIA driver 575.57.08 is older than 580, the oldest that runs this image's CUDA; no job taken"
    )


def test_nothing_is_queried_without_a_setting_and_nothing_checked_without_a_gpu() -> None:
    unset = FakeQuery("470.0")
    assert check_driver(None, None, unset) is None and unset.calls == 0
    cuda_only = FakeQuery("470.0")
    assert check_driver("13.0", None, cuda_only) is None and cuda_only.calls == 0
    no_gpu = FakeQuery(None)
    assert check_driver("13.0", "580.65.06", no_gpu) is None and no_gpu.calls == 1


def test_unreadable_versions_are_refused_by_name() -> None:
    with pytest.raises(DriverMismatch, match=r"^COMFYSERVE_MIN_DRIVER 'R580' is not a driver version"):
        check_driver("13.0", "R580", FakeQuery("580.65.06"))
    with pytest.raises(DriverMismatch, match=r"^cannot read the NVIDIA driver version: got 'N/A'$"):
        check_driver("13.0", "580", FakeQuery("N/A"))


def test_the_kernel_modules_version_file_is_read_first(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16)\n"
        "GCC version:  gcc version 11.4.1 20230605 (Red Hat 11.4.1-2) (GCC)\n"
    )
    assert host_driver_version(proc, nvidia_smi=str(tmp_path / "absent")) == "580.65.06"


def test_nvidia_smi_answers_when_there_is_no_version_file(tmp_path: Path) -> None:
    smi = _script(tmp_path / "nvidia-smi", 'echo "570.172.08"')
    assert host_driver_version(tmp_path / "none", nvidia_smi=str(smi)) == "570.172.08"
    assert host_driver_version(tmp_path / "none", nvidia_smi=str(tmp_path / "absent")) is None  # no GPU
    broken = _script(tmp_path / "broken-smi", 'echo "NVIDIA-SMI has failed: no driver" >&2; exit 9')
    with pytest.raises(DriverMismatch, match=r"broken-smi: NVIDIA-SMI has failed: no driver$"):
        host_driver_version(tmp_path / "none", nvidia_smi=str(broken))


def test_the_worker_command_exits_with_one_line_before_taking_a_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("comfyserve.worker.driver_check._PROC_VERSION", tmp_path / "no-kernel-module")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "nvidia-smi", 'echo "570.172.08"')
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "COMFYSERVE_BUCKET": "jobs",
        "COMFYSERVE_QUEUE_URL": "http://127.0.0.1:1/q",
        "COMFYSERVE_TABLE": "jobs-table",
        "COMFYSERVE_EVENT_BUS": "comfyserve",
        "COMFYSERVE_WORK_DIR": str(tmp_path / "w"),
        "COMFYSERVE_CUDA_VERSION": "13.0",
        "COMFYSERVE_MIN_DRIVER": "580.65.06",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert main(["worker"]) == 2
    assert capsys.readouterr().err == f"comfyserve worker: {OLD_DRIVER_LINE}\n"
    assert not (tmp_path / "w").exists()  # nothing started: no scratch folder, no liveness file


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path
