"""Shared by the local-stack, websocket, worker-loop and ComfyUI-client tests: workflows, the test node pack,
and polling with a deadline (never a sleep standing in for synchronisation)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

ROOT = Path(__file__).resolve().parents[2]
STACK_NODES = Path(__file__).resolve().parent / "stack_nodes"
IMAGE_ONLY = ROOT / "examples" / "image_only.json"
TERMINAL = ("succeeded", "failed", "cancelled")
# The packs these tests' workflows use: workers that skip the model packs (diffusers) start in seconds.
IMAGE_PACKS = (
    "comfyserve.nodes.primitives",
    "comfyserve.nodes.image",
    "comfyserve.nodes.mask",
    "comfyserve.nodes.image_io",
)

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float = 20.0, what: str = "condition") -> T:
    """Poll ``probe`` every 20 ms until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def image_only() -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(IMAGE_ONLY.read_text())
    return workflow


def wait_workflow(seconds: float, steps: int = 10, prefix: str = "wait", color: int = 255) -> dict[str, Any]:
    """EmptyImage → StackTestWait(seconds) → SaveImage: a job that runs as long as asked, reporting progress
    (a ``color`` not used before keeps the first node out of the worker's cache)."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color}},
        "2": {"class_type": "StackTestWait", "inputs": {"image": ["1", 0], "seconds": seconds, "steps": steps}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def fail_workflow(message: str = "boom") -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "StackTestFail", "inputs": {"image": ["1", 0], "message": message}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}},
    }


class Api:
    """A keep-alive session on the stack's HTTP API with one tenant's key."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url = url
        self.http = requests.Session()
        if key is not None:
            self.http.headers["x-api-key"] = key

    def submit(self, workflow: dict[str, Any], **fields: Any) -> str:
        response = self.http.post(f"{self.url}/v1/jobs", json={"workflow": workflow, **fields}, timeout=10)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/v1/jobs/{job_id}", timeout=10)
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def wait_status(self, job_id: str, statuses: tuple[str, ...] = TERMINAL, timeout_s: float = 30.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            view = self.job(job_id)
            return view if view["status"] in statuses else None

        return wait_for(probe, timeout_s, f"job {job_id} to be {'|'.join(statuses)}")
