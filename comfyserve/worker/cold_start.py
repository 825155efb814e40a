"""The worker's cold start: from the process's start to its first receive, measured in parts (the worker logs
them as one line and its first job reports the total as the ``ColdStart`` figure)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field


class ColdStart(BaseModel):
    """From the process's start to its first receive, in seconds, with its parts."""

    worker_id: str
    backend: str
    device: str = Field(description="cuda or cpu")
    process_s: float = Field(description="interpreter start, command line, settings")
    clients_s: float = Field(description="the AWS clients made (boto3)")
    imports_s: float = Field(description="torch imported (0 without torch)")
    cuda_init_s: float = Field(description="the CUDA context made (0 on CPU)")
    backend_start_s: float = Field(
        description="node packs imported and registered, or ComfyUI started and answering; its catalog published"
    )
    model_load_s: dict[str, float] = Field(description="the preloaded models: seconds per tier they came from")
    warmup_s: float = Field(description="the warm-up workflow's run (0 without one)")
    total_s: float = Field(description="process start to the first receive")


def process_age_s() -> float:
    """Seconds since this process started (Linux, from /proc; 0 elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    """Time the block into ``seconds[part]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = round(time.perf_counter() - started, 6)


def init_torch(seconds: dict[str, float]) -> str:
    """Import torch (when installed) and make the CUDA context, timing both into ``seconds``; returns the device."""
    with timed(seconds, "imports_s"):
        try:
            import torch
        except ImportError:
            return "cpu"
    with timed(seconds, "cuda_init_s"):
        if not torch.cuda.is_available():
            return "cpu"
        torch.empty(1, device="cuda")  # the context is made on first use
    return "cuda"
