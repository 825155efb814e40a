"""Worker processes of the local stack: each opens the data directory's adapters, builds its registry and
executor once (kept warm across jobs), then runs the worker loop until SIGTERM drains it."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from comfyserve.engine.cache import OutputCache
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import Limits

SPAWN = multiprocessing.get_context("spawn")


class JobOutputCache(OutputCache):
    """The output cache without the entries of nodes that write files (their UI lists images).

    ComfyUI serves a repeated output node from the cache because its files are still in the one shared output
    folder. Here every job has its own folder and must publish its own files, so output nodes always run;
    everything upstream of them (models, latents, decoded images) is still cached across jobs.
    """

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> bool:
        if ui:
            return False
        return super().put(key, outputs, ui)


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
    drain_timeout_s: float = 20.0
    max_receives: int = 5
    allow_private_urls: bool = False
    log_level: int = logging.WARNING


def worker_main(config: WorkerProcessConfig, ready: Event) -> None:
    """A worker process's body; returns once drained (the process then exits 0)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the stack stops its workers with SIGTERM
    logging.basicConfig(level=config.log_level, format="%(asctime)s worker %(process)d %(name)s: %(message)s")
    started = time.perf_counter()
    from comfyserve.engine.executor import Executor
    from comfyserve.engine.registry import build_registry
    from comfyserve.localstack.adapters import LocalAdapters
    from comfyserve.localstack.prompt_messages import feed_messages
    from comfyserve.nodes import BUILTIN_PACKS
    from comfyserve.worker.loop import Worker, WorkerPorts, WorkerSettings

    adapters = LocalAdapters.open(
        config.data_dir,
        config.base_url,
        max_receives=config.max_receives,
        allow_private_urls=config.allow_private_urls,
    )
    registry = build_registry(config.node_packs or BUILTIN_PACKS, custom_nodes=config.custom_nodes)
    settings = WorkerSettings(
        work_dir=adapters.work_dir,
        models=ModelInventory.scan(config.models_dir) if config.models_dir else ModelInventory(),
        limits=config.limits,
        visibility_timeout_s=config.visibility_timeout_s,
        drain_timeout_s=config.drain_timeout_s,
        allow_private_urls=config.allow_private_urls,
    )
    executor = Executor(registry, cache=JobOutputCache())
    worker = Worker(
        WorkerPorts(adapters.blobs, adapters.queue, adapters.store, adapters.bus),
        registry,
        executor,
        settings,
        messages=feed_messages(adapters.feed),
        cold_start_s=time.perf_counter() - started,
    )
    signal.signal(signal.SIGTERM, lambda _signum, _frame: worker.request_drain())
    ready.set()
    try:
        worker.run()
    finally:
        executor.close()
        adapters.webhooks.flush(timeout_s=5.0)
        adapters.close()


def start_worker(config: WorkerProcessConfig, index: int) -> tuple[multiprocessing.process.BaseProcess, Event]:
    ready = SPAWN.Event()
    process = SPAWN.Process(target=worker_main, args=(config, ready), name=f"comfyserve-worker-{index}")
    process.start()
    return process, ready
