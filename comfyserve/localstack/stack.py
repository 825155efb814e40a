"""The whole service on one machine: local adapters under a data directory, the job service and its route
table behind the local HTTP server, and N worker processes (spawned) running the worker loop.

``LocalStack(data_dir, port, workers, api_keys).start()`` … ``.stop()`` (or use it as a context manager).
Stopping drains the workers (SIGTERM: each finishes or releases its job), then closes the server. Everything
durable lives in the data directory, so a stack started again on it carries on with the queued jobs.

A lifecycle thread (:mod:`comfyserve.localstack.lifecycle`) dispatches the jobs a submit left undispatched and
fails the jobs whose messages were dead-lettered, as the cloud's ``reconciler`` and ``dead_letter`` Lambdas do.

A supervisor thread replaces a worker that dies (``kill -9``, out of memory: any exit but a drained one's 0) at
once; its job comes back when the message's visibility runs out, as it always did. A worker that keeps dying
while it starts is restarted after a delay that doubles up to :data:`RESTART_DELAY_MAX_S`. The workers, for
their part, stop once the stack's process is gone (:func:`~comfyserve.localstack.workers.watch_parent`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import TracebackType

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from comfyserve.api.app import build_app
from comfyserve.api.auth import Authenticator, authenticator_from_settings
from comfyserve.engine.cache import CachePolicy
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.registry import build_registry
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.localstack.apigw import build_event
from comfyserve.localstack.edge import Authenticate, Mount
from comfyserve.localstack.lifecycle import Lifecycle
from comfyserve.localstack.resolver_pool import Resolver
from comfyserve.localstack.server import LocalServer
from comfyserve.localstack.workers import WorkerProcessConfig, start_worker, worker_metrics
from comfyserve.localstack.ws_hub import WebsocketHub
from comfyserve.service.catalog_source import PublishedCatalog
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import ServiceError
from comfyserve.service.job_service import JobService
from comfyserve.service.settings import ServiceSettings

log = logging.getLogger(__name__)

DEFAULT_PORT = 8188  # ComfyUI's port, so its clients find us where they look
READY_TIMEOUT_S = 120.0
SUPERVISE_TICK_S = 0.5
RESTART_DELAY_MAX_S = 30.0
SHORT_LIFE_S = 10.0  # a worker that dies sooner than this after starting is restarted after a delay


def key_pairs(api_keys: str | Mapping[str, str]) -> str:
    """``tenant:key,…`` from that string itself or a ``{tenant: key}`` mapping."""
    if isinstance(api_keys, str):
        return api_keys
    return ",".join(f"{tenant}:{key}" for tenant, key in api_keys.items())


def websocket_authenticator(auth: Authenticator) -> Authenticate:
    """The route table's authenticator applied to a websocket upgrade's headers."""

    def authenticate(headers: Mapping[str, str]) -> str | None:
        event = APIGatewayProxyEvent(build_event("GET", "/ws", "", list(headers.items()), b"", "127.0.0.1"))
        try:
            return auth.authenticate(event)
        except ServiceError:
            return None

    return authenticate


class LocalStack:
    def __init__(
        self,
        data_dir: Path,
        port: int = DEFAULT_PORT,
        workers: int = 1,
        api_keys: str | Mapping[str, str] = "",
        *,
        host: str = "127.0.0.1",
        settings: ServiceSettings | None = None,
        models_dir: Path | None = None,
        custom_nodes: Iterable[Path] = (),
        node_packs: Sequence[str] | None = None,
        visibility_timeout_s: int = 60,
        drain_timeout_s: float = 20.0,
        max_receives: int = 5,
        backend: str = "builtin",
        comfyui_dir: Path | None = None,
        comfyui_python: Path | None = None,
        cache: CachePolicy = CachePolicy(),
    ) -> None:
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        base = settings or ServiceSettings()
        pairs = ",".join(p for p in (base.api_keys, key_pairs(api_keys)) if p)
        self.settings = base.model_copy(update={"api_keys": pairs, "auth": "api_keys"})
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.workers = workers
        self.models_dir = models_dir
        self.custom_nodes = tuple(custom_nodes)
        self.node_packs = tuple(node_packs) if node_packs is not None else None
        self.visibility_timeout_s = visibility_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.max_receives = max_receives
        if backend == "comfyui" and comfyui_dir is None:
            raise ValueError("the comfyui backend needs comfyui_dir (a ComfyUI checkout)")
        self.backend = backend
        self.comfyui_dir = comfyui_dir
        self.comfyui_python = comfyui_python
        self.cache = cache  # ComfyUI's --cache-lru / --cache-none, on either backend
        self.processes: list[BaseProcess] = []
        self._ready: list[Event] = []
        self._started_at: list[float] = []
        self._restart_delay: list[float] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._server: LocalServer | None = None
        self._thread: threading.Thread | None = None
        self._adapters: LocalAdapters | None = None
        self._hub: WebsocketHub | None = None
        self._lifecycle: Lifecycle | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stack is not started")
        return self._server.url

    @property
    def adapters(self) -> LocalAdapters:
        if self._adapters is None:
            raise RuntimeError("the stack is not started")
        return self._adapters

    @property
    def app(self) -> Resolver:
        """The route table the server resolves requests with (its pool of resolvers)."""
        if self._server is None or self._server.app.pool is None:
            raise RuntimeError("the stack is not started")
        return self._server.app.pool

    def _catalog(self) -> Catalog:
        """What the workers can run: the packaged catalog of the built-in packs (no node code imported) plus the
        custom nodes' specs; or, with ``node_packs`` chosen, those packs' own catalog."""
        if self.node_packs is not None:
            return Catalog.from_registry(build_registry(self.node_packs, custom_nodes=self.custom_nodes))
        catalog = Catalog.packaged()
        if not self.custom_nodes:
            return catalog
        custom = build_registry((), custom_nodes=self.custom_nodes)
        return Catalog({**catalog.specs, **custom.specs()}, custom.classes)

    def start(self) -> LocalStack:
        """Serve, then start the workers. With the comfyui backend the API validates against the catalog the
        workers publish once their ComfyUI answers (the packaged one until then). What can be refused (the API
        keys, the models folder, the port) is checked before anything is written to the data directory."""
        auth = authenticator_from_settings(self.settings)
        inventory = ModelInventory.scan(self.models_dir) if self.models_dir else None
        server = self._server = LocalServer((self.host, self.port))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        adapters = self._adapters = LocalAdapters.open(
            self.data_dir,
            server.url,
            max_receives=self.max_receives,
            allow_private_urls=self.settings.allow_private_urls,
        )
        deps = ServiceDeps(
            blobs=adapters.blobs,
            queue=adapters.queue,
            jobs=adapters.store,
            events=adapters.bus,
            catalog=self._catalog()
            if self.backend == "builtin"
            else PublishedCatalog(adapters.blobs, Catalog.packaged(), refresh_s=1.0, awaited=True),
            settings=self.settings,
            inventory=inventory,
            metrics=lambda tenant: worker_metrics(self.data_dir, tenant),
        )
        service = JobService(deps)
        hub = self._hub = WebsocketHub(adapters.feed, service.queue_remaining)
        hub.start()
        server.mount(Mount(lambda: build_app(service, auth), adapters.blobs, hub, websocket_authenticator(auth)))
        self._thread = threading.Thread(target=server.serve_forever, name="comfyserve-http", daemon=True)
        self._thread.start()
        for index in range(self.workers):
            self.add_worker(index)
        lifecycle = self._lifecycle = Lifecycle(
            adapters.store, adapters.queue, adapters.bus, adapters.blobs, grace_s=self.settings.dispatch_grace_s
        )
        lifecycle.start()
        self._stopping.clear()
        self._supervisor = threading.Thread(target=self._supervise, name="comfyserve-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def worker_config(self) -> WorkerProcessConfig:
        return WorkerProcessConfig(
            data_dir=self.data_dir,
            base_url=self.url,
            models_dir=self.models_dir,
            custom_nodes=self.custom_nodes,
            node_packs=self.node_packs,
            limits=self.settings.limits,
            visibility_timeout_s=self.visibility_timeout_s,
            drain_timeout_s=self.drain_timeout_s,
            max_receives=self.max_receives,
            allow_private_urls=self.settings.allow_private_urls,
            log_level=logging.getLogger().getEffectiveLevel(),
            backend=self.backend,
            comfyui_dir=self.comfyui_dir,
            comfyui_python=self.comfyui_python,
            cache=self.cache,
            parent_pid=os.getpid(),
        )

    def add_worker(self, index: int | None = None) -> BaseProcess:
        """Start one more worker process, supervised like the others."""
        with self._lock:
            process, ready = start_worker(self.worker_config(), len(self.processes) if index is None else index)
            self.processes.append(process)
            self._ready.append(ready)
            self._started_at.append(time.monotonic())
            self._restart_delay.append(0.0)
        return process

    def _supervise(self) -> None:
        """Replace each worker that died, until the stack stops."""
        restart_at: dict[int, float] = {}
        while not self._stopping.is_set():
            with self._lock:
                sentinels = [p.sentinel for p in self.processes if p.is_alive()]
            if sentinels:
                wait(sentinels, timeout=SUPERVISE_TICK_S)  # wakes as soon as one exits
            else:
                self._stopping.wait(SUPERVISE_TICK_S)
            with self._lock:
                for slot, process in enumerate(self.processes):
                    if self._stopping.is_set() or process.is_alive() or process.exitcode == 0:
                        continue  # a worker that exits 0 was drained on purpose
                    now = time.monotonic()
                    if slot not in restart_at:
                        restart_at[slot] = now + self._backoff(slot, now)
                        log.warning(
                            "worker %s (pid %s) died with exit code %s; starting a replacement",
                            process.name,
                            process.pid,
                            process.exitcode,
                        )
                    if now >= restart_at[slot]:
                        del restart_at[slot]
                        process.join()
                        self.processes[slot], self._ready[slot] = start_worker(self.worker_config(), slot)
                        self._started_at[slot] = time.monotonic()

    def _backoff(self, slot: int, now: float) -> float:
        """0 for a worker that had run a while; else a delay doubling up to RESTART_DELAY_MAX_S (a crash loop)."""
        short_lived = now - self._started_at[slot] < SHORT_LIFE_S
        delay = min(max(1.0, 2 * self._restart_delay[slot]), RESTART_DELAY_MAX_S) if short_lived else 0.0
        self._restart_delay[slot] = delay
        return delay

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every worker started so far has built its registry and is receiving."""
        deadline = time.monotonic() + timeout_s
        for process, ready in zip(self.processes, self._ready, strict=True):
            while not ready.wait(0.1):
                if not process.is_alive():
                    raise RuntimeError(f"worker {process.name} exited with code {process.exitcode} while starting")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {process.name} not ready after {timeout_s} s")

    def kill_workers(self) -> None:
        """SIGKILL every worker, unreplaced: a stop that cannot wait (the jobs they held come back when their
        messages' visibility runs out)."""
        self._stopping.set()
        with self._lock:
            for process in self.processes:
                if process.is_alive():
                    process.kill()

    def stop(self) -> None:
        """Drain the workers, then stop serving; safe to call twice."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker finishes or releases its job
        for process in self.processes:
            process.join(self.drain_timeout_s + 10)
            if process.is_alive():
                log.warning("worker %s did not drain in time; killing it", process.name)
                process.kill()
                process.join()
        self.processes.clear()
        self._ready.clear()
        self._started_at.clear()
        self._restart_delay.clear()
        if self._hub is not None:
            self._hub.stop()  # closes the websockets while the server's loop still runs
            self._hub = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._lifecycle is not None:
            self._lifecycle.stop()
            self._lifecycle = None
        if self._adapters is not None:
            self._adapters.close()
            self._adapters = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
