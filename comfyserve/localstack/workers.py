"""Worker processes of the local stack: each opens the data directory's adapters, starts its backend once (kept
warm across jobs), then runs the worker loop until SIGTERM drains it; a job that ignores the interruption
cannot hold the process past the drain window and :data:`~comfyserve.engine.deadline.EXIT_MARGIN_S`, whatever
native call it is in (comfyserve.worker.drain): it is put back in the queue, its message visible at once, and
the process exits with status 1.

Each process subscribes the completion use case to its blob store's "object created" signal, so a job's
manifest completes it in process, as S3 → EventBridge → Lambda ``completion`` does in the cloud. Log lines go
through the Powertools Logger (JSON on stderr, with the job id); figures are appended as EMF documents to
``data_dir/metrics.jsonl`` (``GET /v1/metrics``).

A worker dies with its stack: it watches its parent process, and once that is gone (``kill -9`` of ``serve``) it
drains as on SIGTERM, so no orphan keeps taking jobs with the settings of a stack that no longer runs.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from comfyserve.engine.cache import CachePolicy
from comfyserve.engine.deadline import EXIT_MARGIN_S, exit_after
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import Limits
from comfyserve.worker.backend import Backend
from comfyserve.worker.drain import DrainSignal

SPAWN = multiprocessing.get_context("spawn")
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class WorkerProcessConfig:
    """Everything a worker process needs, picklable for the spawn start method."""

    data_dir: Path
    base_url: str
    models_dir: Path | None = None
    custom_nodes: tuple[Path, ...] = ()
    node_packs: tuple[str, ...] | None = None  # None: every built-in pack
    limits: Limits = field(default_factory=Limits)
    visibility_timeout_s: int = 60
    # How often a running job's record is read for a cancel: locally a SQLite read (well under a millisecond),
    # so often enough that a cancel ends a job in about 0.2 s (the cloud's DynamoDB is asked every 2 s).
    cancel_poll_s: float = 0.1
    drain_timeout_s: float = 20.0
    max_receives: int = 5
    receive_wait_s: int = 1
    allow_private_urls: bool = False
    log_level: int = logging.WARNING
    backend: str = "builtin"  # or "comfyui": a managed ComfyUI per worker process
    comfyui_dir: Path | None = None
    comfyui_python: Path | None = None
    cache: CachePolicy = field(default_factory=CachePolicy)
    parent_pid: int | None = None  # the stack's process: the worker stops once it is gone
    parent_check_s: float = 0.25


def watch_parent(parent_pid: int, interval_s: float) -> threading.Thread:
    """A daemon thread that sends this process SIGTERM once its parent is no longer ``parent_pid`` (the parent
    died and the process was reparented): the drain stops it, or, while it is still starting, ends it at once."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="comfyserve-parent-watch", daemon=True)
    thread.start()
    return thread


def worker_main(config: WorkerProcessConfig, ready: Event) -> None:
    """A worker process's body; returns once drained (the process then exits 0)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack stops its workers with SIGTERM
    drain = DrainSignal((signal.SIGTERM,))  # before any thread starts
    running: list[Any] = []  # the Worker, once built: the hard deadline hands its job back
    hard_exit: list[threading.Timer] = []

    def hand_back() -> None:
        for built in running:
            built.abandon()

    def on_drain() -> None:
        if not running:  # still starting, so holding no job: stop now, as SIGTERM's default action would
            os._exit(0)
        hard_exit.append(exit_after(config.drain_timeout_s + EXIT_MARGIN_S, before_exit=hand_back))

    drain.then(on_drain)
    if config.parent_pid is not None:
        watch_parent(config.parent_pid, config.parent_check_s)
    started = time.perf_counter()
    from comfyserve.adapters.local.jsonl import JsonLinesFile
    from comfyserve.localstack.adapters import LocalAdapters
    from comfyserve.localstack.prompt_messages import feed_messages
    from comfyserve.worker.loop import Worker, WorkerPorts, WorkerSettings
    from comfyserve.worker.telemetry import WorkerTelemetry, worker_logger

    logger = worker_logger(config.log_level, sys.stderr)
    adapters = LocalAdapters.open(
        config.data_dir,
        config.base_url,
        max_receives=config.max_receives,
        allow_private_urls=config.allow_private_urls,
    )
    backend = _backend(config, adapters.work_dir)
    backend.start()
    if config.backend == "comfyui":  # the edge validates against what this ComfyUI really serves
        from comfyserve.service.catalog_source import publish_catalog

        publish_catalog(adapters.blobs, backend.object_info())
    metrics = JsonLinesFile(config.data_dir / METRICS_FILE)
    settings = WorkerSettings(
        work_dir=adapters.work_dir,
        visibility_timeout_s=config.visibility_timeout_s,
        cancel_poll_s=config.cancel_poll_s,
        receive_wait_s=config.receive_wait_s,
        drain_timeout_s=config.drain_timeout_s,
    )
    worker = Worker(
        WorkerPorts(adapters.blobs, adapters.queue, adapters.store, adapters.bus),
        backend,
        settings,
        telemetry=WorkerTelemetry(lambda document: metrics.append(json.dumps(document)), logger),
        messages=feed_messages(adapters.feed),
        cold_start_s=time.perf_counter() - started,
    )
    adapters.blobs.on_created(worker.completion.on_object_created)
    running.append(worker)
    drain.then(worker.request_drain)
    ready.set()
    try:
        worker.run()
        for timer in hard_exit:
            timer.cancel()
    finally:
        backend.close()
        adapters.webhooks.flush(timeout_s=5.0)
        adapters.close()


def _backend(config: WorkerProcessConfig, work_dir: Path) -> Backend:
    from comfyserve.worker.backend_factory import build_backend

    if config.backend == "comfyui":
        return build_backend(
            "comfyui",
            comfyui_dir=config.comfyui_dir,
            python=config.comfyui_python,
            work_dir=work_dir / f"comfyui-{os.getpid()}",
            model_root=config.models_dir,
            custom_nodes=config.custom_nodes,
            cache=config.cache,
        )
    return build_backend(
        "builtin",
        models=ModelInventory.scan(config.models_dir) if config.models_dir else ModelInventory(),
        limits=config.limits,
        node_packs=config.node_packs,
        custom_nodes=config.custom_nodes,
        cache=config.cache,
    )


def worker_metrics(data_dir: Path, tenant: str) -> dict[str, Any]:
    """The figures of ``tenant``'s jobs on every worker of this data directory (``GET /v1/metrics``)."""
    from comfyserve.adapters.local.jsonl import JsonLinesFile
    from comfyserve.worker.telemetry import summarize

    path = data_dir / METRICS_FILE
    return summarize(JsonLinesFile(path).read() if path.exists() else [], tenant)


def start_worker(config: WorkerProcessConfig, index: int) -> tuple[multiprocessing.process.BaseProcess, Event]:
    ready = SPAWN.Event()
    process = SPAWN.Process(target=worker_main, args=(config, ready), name=f"comfyserve-worker-{index}")
    process.start()
    return process, ready
