"""The cloud composition root of the worker (``comfyserve worker``): S3, SQS, DynamoDB and EventBridge adapters,
the execution backend, the model store, ECS task protection and the worker loop, from :class:`CloudWorkerSettings`.

Before the first receive the worker gets everything a job needs ready — torch and CUDA, the backend, the
preloaded models, one warm-up run — and logs that cold start with its parts. SIGTERM and SIGINT (ECS scale-in,
a deployment, a Spot interruption) turn into a drain: no new message is received, the job in hand finishes
within ``COMFYSERVE_DRAIN_TIMEOUT_S`` or is put back to the queue at once. A job whose node ignores the
interruption cannot hold the process: it exits (status 1) :data:`~comfyserve.engine.deadline.EXIT_MARGIN_S`
after the drain window, and the job's message comes back when its visibility runs out.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.engine.deadline import EXIT_MARGIN_S, exit_after
from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.ports import BlobStore, PortError
from comfyserve.settings import CloudWorkerSettings
from comfyserve.worker.backend import Backend, BackendJob
from comfyserve.worker.cold_start import ColdStart, init_torch, process_age_s, timed
from comfyserve.worker.drain import DrainSignal
from comfyserve.worker.driver_check import check_driver
from comfyserve.worker.ecs_protection import task_protection
from comfyserve.worker.liveness import Liveness, LivenessQueue
from comfyserve.worker.loop import Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.telemetry import WorkerTelemetry, stdout_sink, worker_logger

if TYPE_CHECKING:
    from comfyserve.engine.registry import NodeRegistry

log = logging.getLogger(__name__)
# Long polls wait up to 20 s: the read timeout outlasts them; standard retries ride out throttling and blips.
CLIENT_CONFIG = Config(read_timeout=60, connect_timeout=10, retries={"mode": "standard", "max_attempts": 5})


def default_worker_id() -> str:
    """The ECS task id (from the task metadata endpoint) or, outside ECS, ``<host>:<pid>``."""
    metadata = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if metadata:
        try:
            with urllib.request.urlopen(f"{metadata}/task", timeout=2) as response:
                return str(json.loads(response.read())["TaskARN"]).rsplit("/", 1)[-1]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("no task id from the ECS metadata endpoint: %s", exc)
    return f"{socket.gethostname()}:{os.getpid()}"


def node_registry(settings: CloudWorkerSettings, packs: Sequence[str] | None = None) -> NodeRegistry:
    """The built-in packs (or ``packs``) and the ``COMFYSERVE_CUSTOM_NODES`` folders, under the allow/deny lists."""
    from comfyserve.engine.registry import NodeFilter, build_registry
    from comfyserve.nodes import BUILTIN_PACKS

    registry = build_registry(
        BUILTIN_PACKS if packs is None else packs,
        custom_nodes=[Path(directory) for directory in settings.custom_nodes],
        node_filter=NodeFilter(frozenset(settings.node_allow), frozenset(settings.node_deny)),
    )
    for failure in registry.failures:
        log.warning("skipped node pack %s: %s", failure.pack, failure.error)
    return registry


def build_backend(settings: CloudWorkerSettings, inventory: ModelInventory) -> Backend:
    """The backend ``COMFYSERVE_BACKEND`` names, not started."""
    from comfyserve.worker.backend_factory import build_backend as build

    if settings.backend == "builtin":
        return build("builtin", registry=node_registry(settings), models=inventory)
    assert settings.comfyui_dir is not None  # the settings refuse comfyui without it
    return build(
        "comfyui",
        comfyui_dir=settings.comfyui_dir,
        work_dir=settings.work_dir / "comfyui",
        python=settings.comfyui_python,
        model_root=settings.model_root,
        custom_nodes=tuple(Path(directory) for directory in settings.custom_nodes),
        node_allow=settings.node_allow or None,
        node_deny=settings.node_deny,
    )


def preload_models(settings: CloudWorkerSettings, inventory: ModelInventory) -> dict[str, float]:
    """``COMFYSERVE_PRELOAD`` before the first receive; seconds per tier the models came from. The builtin
    backend loads them into memory; ComfyUI runs in its own process, so for it they are only made local on the
    model root it reads (its warm-up workflow loads them there)."""
    from comfyserve.model_store.preload import preload

    return preload(inventory, settings.preload, load=settings.backend == "builtin")[0]


def publish_served_catalog(backend: Backend, blobs: BlobStore, key: str) -> None:
    """Publish the catalog this worker really serves (its packs, custom nodes and allow/deny lists, or what its
    ComfyUI loaded): the API validates against it. A failure is logged; the worker serves all the same."""
    from comfyserve.service.catalog_source import publish_catalog

    try:
        publish_catalog(blobs, backend.object_info(), key)
    except (ComfyServeError, PortError) as exc:
        log.warning("the node catalog was not published: %s", exc)


class WorkerStartError(ComfyServeError):
    """A setting names a file or folder the worker cannot use."""


def read_warmup(settings: CloudWorkerSettings) -> dict[str, Any] | None:
    """The warm-up workflow, read before anything slow (a bad one stops the worker at once, naming it)."""
    from comfyserve.engine.prompt_format import parse_workflow_document

    path = settings.warmup_workflow
    if path is None:
        return None
    try:
        return parse_workflow_document(path.read_bytes())
    except OSError as exc:
        raise WorkerStartError(f"COMFYSERVE_WARMUP_WORKFLOW {path}: {exc.strerror or exc}") from None
    except ComfyServeError as exc:
        raise WorkerStartError(f"COMFYSERVE_WARMUP_WORKFLOW {path}: {exc}") from None


def check_folders(settings: CloudWorkerSettings) -> None:
    """The scratch folder can be made, every custom nodes folder is there."""
    try:
        settings.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkerStartError(f"COMFYSERVE_WORK_DIR {settings.work_dir}: {exc.strerror or exc}") from None
    missing = [folder for folder in settings.custom_nodes if not Path(folder).is_dir()]
    if missing:
        raise WorkerStartError(f"COMFYSERVE_CUSTOM_NODES: not a folder: {', '.join(missing)}")


def warm_up(backend: Backend, prompt: dict[str, Any], work_dir: Path) -> None:
    """Run the warm-up workflow once; a failure is logged (the worker serves all the same)."""
    scratch = work_dir / "warmup"
    try:
        result = backend.run(BackendJob(job_id="warmup", prompt=prompt, work_dir=scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.status != "success":
        log.warning("the warm-up workflow did not succeed: %s", result.error)


def run_worker(settings: CloudWorkerSettings) -> int:
    """Get ready, then serve jobs until a drain; returns the exit status."""
    check_driver(settings.cuda_version, settings.min_driver)
    check_folders(settings)
    warmup = read_warmup(settings)
    drain = DrainSignal()
    seconds = {"process_s": round(process_age_s(), 6)}
    started = time.perf_counter()
    logger = worker_logger(settings.log_level.upper())
    liveness = Liveness(settings)
    liveness.touch()
    worker_id = settings.worker_id or default_worker_id()
    with timed(seconds, "clients_s"):
        aws = aws_ports(settings.resources(), client_config=CLIENT_CONFIG)
    device = init_torch(seconds)
    from comfyserve.model_store.settings import worker_inventory

    inventory = worker_inventory(settings)
    with timed(seconds, "backend_start_s"), liveness.held():
        backend = build_backend(settings, inventory)
        backend.start()
        publish_served_catalog(backend, aws.blobs, settings.catalog_key)
    try:
        with liveness.held():
            model_load_s = preload_models(settings, inventory)
            with timed(seconds, "warmup_s"):
                if warmup is not None and not drain.requested.is_set():
                    warm_up(backend, warmup, settings.work_dir)
        total_s = round(seconds["process_s"] + time.perf_counter() - started, 6)
        cold = ColdStart(
            worker_id=worker_id,
            backend=backend.name,
            device=device,
            process_s=seconds["process_s"],
            clients_s=seconds["clients_s"],
            imports_s=seconds["imports_s"],
            cuda_init_s=seconds.get("cuda_init_s", 0.0),
            backend_start_s=seconds["backend_start_s"],
            model_load_s=model_load_s,
            warmup_s=seconds["warmup_s"],
            total_s=total_s,
        )
        worker = Worker(
            WorkerPorts(aws.blobs, LivenessQueue(aws.queue, liveness), aws.jobs, aws.events),
            backend,
            WorkerSettings(
                work_dir=settings.work_dir,
                visibility_timeout_s=settings.visibility_timeout_s,
                receive_wait_s=settings.receive_wait_s,
                drain_timeout_s=settings.drain_timeout_s,
                job_timeout_s=settings.job_timeout_s,
                worker_id=worker_id,
            ),
            protection=task_protection(settings.ecs_agent_uri),
            telemetry=WorkerTelemetry(stdout_sink, logger),
            cold_start_s=total_s,
        )
        logger.info("cold start", extra={"cold_start": cold.model_dump()})
        hard_exit: list[threading.Timer] = []
        drain.then(worker.request_drain)
        drain.then(
            lambda: hard_exit.append(exit_after(settings.drain_timeout_s + EXIT_MARGIN_S, before_exit=worker.abandon))
        )
        worker.run()
        for timer in hard_exit:
            timer.cancel()
    finally:
        backend.close()
    logger.info("drained")
    return 0
