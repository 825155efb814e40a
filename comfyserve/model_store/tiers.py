"""Where a model came from when a job loaded it, and the record of those loads for the job's timings.

A run records its loads with :func:`recording`; code that loads a model calls :func:`record`. The record is a
context variable holding a list, so the executor's copied context appends to the very list the caller reads.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Tier(StrEnum):
    """The tier a model file was found in; ``local`` is a plain models directory, ``ram`` a loaded model."""

    S3 = "s3"
    EFS = "efs"
    NVME = "nvme"
    LOCAL = "local"
    RAM = "ram"


@dataclass(frozen=True)
class Resolved:
    """A model file on local disk and the tier it was found in (``seconds``: time spent making it local)."""

    path: Path
    tier: Tier
    seconds: float = 0.0


class ModelLoad(BaseModel):
    """One model a job loaded: ``fetch_s`` making the file local, ``load_s`` reading it into memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(description='"<folder>/<name>", e.g. "checkpoints/sd15.safetensors"')
    tier: Tier
    fetch_s: float = Field(ge=0)
    load_s: float = Field(ge=0)

    @property
    def seconds(self) -> float:
        return self.fetch_s + self.load_s


_loads: contextvars.ContextVar[list[ModelLoad] | None] = contextvars.ContextVar("comfyserve_model_loads", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[ModelLoad]]:
    """``with recording() as loads: run(...)`` — ``loads`` lists every model loaded inside the block."""
    loads: list[ModelLoad] = []
    token = _loads.set(loads)
    try:
        yield loads
    finally:
        _loads.reset(token)


def record(load: ModelLoad) -> None:
    """Add ``load`` to the current recording (nothing happens outside one)."""
    loads = _loads.get()
    if loads is not None:
        loads.append(load)


def seconds_by_tier(loads: list[ModelLoad]) -> dict[str, float]:
    """Total seconds per tier, e.g. ``{"s3": 4.2, "ram": 0.0}`` (cold-start parts and job timings)."""
    totals: dict[str, float] = {}
    for load in loads:
        totals[load.tier.value] = round(totals.get(load.tier.value, 0.0) + load.seconds, 6)
    return totals
