"""The host's NVIDIA driver against the image's CUDA build, checked before the worker takes a job: a CUDA 13
image on a host whose driver is older than R580 would fail every job at its first CUDA call. The driver version
comes from the kernel module (``/proc/driver/nvidia/version``) or ``nvidia-smi``, so no torch import is needed;
a host with neither has no GPU and is not checked."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from comfyserve.engine.errors import ComfyServeError

_PROC_VERSION = Path("/proc/driver/nvidia/version")
_KERNEL_MODULE = re.compile(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+(?:\.\d+)+)")
_VERSION = re.compile(r"^\d+(?:\.\d+)*$")

DriverQuery = Callable[[], str | None]


class DriverMismatch(ComfyServeError):
    """The host's driver cannot run the image's CUDA build (or the versions cannot be read)."""


def host_driver_version(proc_version: Path | None = None, nvidia_smi: str = "nvidia-smi") -> str | None:
    """The loaded NVIDIA driver's version, or ``None`` when the host has no NVIDIA GPU driver."""
    try:
        match = _KERNEL_MODULE.search((proc_version or _PROC_VERSION).read_text())
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        result = subprocess.run(
            [nvidia_smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DriverMismatch(f"cannot read the NVIDIA driver version: {nvidia_smi}: {exc}") from None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        detail = (result.stderr or result.stdout).strip().splitlines()
        reason = detail[0] if detail else f"exit status {result.returncode}"
        raise DriverMismatch(f"cannot read the NVIDIA driver version: {nvidia_smi}: {reason}")
    return lines[0]


def check_driver(cuda_version: str | None, min_driver: str | None, query: DriverQuery | None = None) -> str | None:
    """Raise :class:`DriverMismatch` (one line naming both versions) when the host's driver is older than
    ``min_driver``, the oldest that runs the image's CUDA build (the stack pairs them, infra/); returns the host's
    driver version (``None``: no GPU, or no minimum to check)."""
    needed = min_driver
    if not needed:
        return None
    if not _VERSION.match(needed):
        raise DriverMismatch(f"COMFYSERVE_MIN_DRIVER {needed!r} is not a driver version such as 580.65.06")
    found = (query or host_driver_version)()
    if found is None:
        return None
    if not _VERSION.match(found):
        raise DriverMismatch(f"cannot read the NVIDIA driver version: got {found!r}")
    if _parts(found) < _parts(needed):
        cuda = f"CUDA {cuda_version}" if cuda_version else "CUDA"
        raise DriverMismatch(
            f"the host's NVIDIA driver {found} is older than {needed}, the oldest that runs this image's {cuda};"
            " no job taken (run the workers on a host with a newer driver: the ECS GPU AMI on Amazon Linux 2023)"
        )
    return found


def _parts(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))
