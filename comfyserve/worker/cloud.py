"""The cloud composition root of the worker (``comfyserve worker``): S3, SQS, DynamoDB and EventBridge adapters,
the execution backend, the model store, ECS task protection and the worker loop, from :class:`CloudWorkerSettings`.

Before the first receive the worker gets everything a job needs ready — torch and CUDA, the backend, the
preloaded models, one warm-up run — and logs that cold start with its parts. SIGTERM and SIGINT (ECS scale-in,
a deployment, a Spot interruption) turn into a drain: no new message is received, the job in hand finishes
within ``COMFYSERVE_DRAIN_TIMEOUT_S`` or is put back to the queue at once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from pydantic import BaseModel, Field

from comfyserve.adapters.aws.ports import aws_ports
from comfyserve.contracts.jobs import QueueMessage
from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.inventory import ModelInventory
from comfyserve.ports import BlobStore, JobQueue, PortError, QueueDepth, ReceivedMessage
from comfyserve.settings import CloudWorkerSettings
from comfyserve.worker.backend import Backend, BackendJob
from comfyserve.worker.ecs_protection import task_protection
from comfyserve.worker.liveness import Liveness
from comfyserve.worker.loop import Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.telemetry import WorkerTelemetry, stdout_sink, worker_logger

if TYPE_CHECKING:
    from comfyserve.engine.registry import NodeRegistry

log = logging.getLogger(__name__)
# Long polls wait up to 20 s: the read timeout outlasts them; standard retries ride out throttling and blips.
CLIENT_CONFIG = Config(read_timeout=60, connect_timeout=10, retries={"mode": "standard", "max_attempts": 5})


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


class DrainSignal:
    """SIGTERM and SIGINT request a drain; a request before the loop runs stops the worker before its first
    receive."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.requested.set()
        for callback in self._callbacks:
            callback()

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on a drain request (at once if one came already)."""
        self._callbacks.append(callback)
        if self.requested.is_set():
            callback()


class LivenessQueue:
    """The job queue, touching the liveness file on every receive and visibility extension."""

    def __init__(self, queue: JobQueue, liveness: Liveness) -> None:
        self._queue, self._liveness = queue, liveness

    def send(self, message: QueueMessage) -> str:
        return self._queue.send(message)

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        received = self._queue.receive(max_messages, visibility_timeout_s, wait_s)
        self._liveness.touch()
        return received

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        self._queue.extend_visibility(receipt, seconds)
        self._liveness.touch()

    def delete(self, receipt: str) -> None:
        self._queue.delete(receipt)

    def release(self, receipt: str) -> None:
        self._queue.release(receipt)

    def approximate_depth(self) -> QueueDepth:
        return self._queue.approximate_depth()

    @property
    def dead_letters(self) -> JobQueue | None:
        return self._queue.dead_letters


@contextmanager
def _timed(seconds: dict[str, float], part: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] = round(time.perf_counter() - started, 6)


def _init_torch(seconds: dict[str, float]) -> str:
    """Import torch (when installed) and make the CUDA context; returns the device."""
    with _timed(seconds, "imports_s"):
        try:
            import torch
        except ImportError:
            return "cpu"
    with _timed(seconds, "cuda_init_s"):
        if not torch.cuda.is_available():
            return "cpu"
        torch.empty(1, device="cuda")  # the context is made on first use
    return "cuda"


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
    from comfyserve.model_store.errors import ModelStoreError
    from comfyserve.model_store.preload import preload, split_model
    from comfyserve.model_store.store import resolve
    from comfyserve.model_store.tiers import ModelLoad, record, recording, seconds_by_tier

    if settings.backend == "builtin":
        return preload(inventory, settings.preload)[0]
    with recording() as loads:
        for spec in settings.preload:
            folder, name = split_model(spec)
            try:
                with resolve(inventory, folder, name) as found:
                    record(ModelLoad(model=spec, tier=found.tier, fetch_s=found.seconds, load_s=0))
            except FileNotFoundError as exc:
                raise ModelStoreError(f"preloading {spec} failed: {exc}") from exc
    return seconds_by_tier(loads)


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
    check_folders(settings)
    warmup = read_warmup(settings)
    drain = DrainSignal()
    seconds = {"process_s": round(process_age_s(), 6)}
    started = time.perf_counter()
    logger = worker_logger(settings.log_level.upper())
    liveness = Liveness(settings)
    liveness.touch()
    worker_id = settings.worker_id or default_worker_id()
    with _timed(seconds, "clients_s"):
        aws = aws_ports(settings.resources(), client_config=CLIENT_CONFIG)
    device = _init_torch(seconds)
    from comfyserve.model_store.settings import worker_inventory

    inventory = worker_inventory(settings)
    with _timed(seconds, "backend_start_s"):
        backend = build_backend(settings, inventory)
        backend.start()
        publish_served_catalog(backend, aws.blobs, settings.catalog_key)
    try:
        model_load_s = preload_models(settings, inventory)
        with _timed(seconds, "warmup_s"):
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
        drain.then(worker.request_drain)
        worker.run()
    finally:
        backend.close()
    logger.info("drained")
    return 0
