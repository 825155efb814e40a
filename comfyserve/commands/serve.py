"""``comfyserve serve [--port P] [--data DIR] [--workers N] [--models DIR] [--backend builtin|comfyui]``: the local
stack, until Ctrl-C (a second Ctrl-C stops at once, killing the workers: the jobs they held run again at the next
start). ``--backend comfyui --comfyui-dir DIR`` runs every job on a managed ComfyUI (one per worker).

It prints one line per job state change (queued, started, succeeded, failed, cancelled). Model names are always
checked at submit, against ``--models`` or else ``DIR/models`` (created empty; scanned when ``serve`` starts).
A start that fails (API keys, port) leaves no data directory behind if it created it.

API keys (``tenant:key``) come from ``COMFYSERVE_API_KEYS`` (comma-separated) or ``--keys-file`` (one a line);
with neither, a key for tenant ``local`` is created once in ``DIR/api_keys.txt``. Every other
``COMFYSERVE_*`` service setting applies too (see ``comfyserve.service.settings``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from comfyserve.commands.comfyui import add_comfyui_options
from comfyserve.commands.common import UsageError
from comfyserve.engine.cache import CachePolicy
from comfyserve.service.settings import ServiceSettings

if TYPE_CHECKING:
    from comfyserve.localstack.stack import LocalStack

DEFAULT_DATA = Path("comfyserve-data")
KEYS_FILE = "api_keys.txt"


def add_parser(subparsers: Any) -> None:
    from comfyserve.localstack.stack import DEFAULT_PORT

    parser = subparsers.add_parser("serve", help="run the local stack: HTTP API, websocket and workers")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"data directory (default ./{DEFAULT_DATA})")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--models", type=Path, help="models directory (checkpoints/, loras/, vae/ ...; default DATA/models)"
    )
    parser.add_argument("--keys-file", type=Path, help="API keys, one 'tenant:key' a line")
    parser.add_argument("--custom-nodes", type=Path, action="append", default=[], help="a custom_nodes directory")
    parser.add_argument("--anonymous-tenant", help="serve requests without a key as this tenant (unmodified clients)")
    parser.add_argument(
        "--backend",
        choices=("builtin", "comfyui"),
        default=os.environ.get("COMFYSERVE_BACKEND") or "builtin",
        help="execution backend (default: $COMFYSERVE_BACKEND, else builtin); comfyui runs a managed ComfyUI",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache-lru",
        type=int,
        metavar="N",
        help="keep at most N node results (least recently used first out), as ComfyUI's --cache-lru; either backend",
    )
    cache.add_argument(
        "--cache-none", action="store_true", help="keep no node result: every node runs every time (either backend)"
    )
    add_comfyui_options(parser)
    parser.set_defaults(func=run)


def local_key(data_dir: Path) -> tuple[Path, str]:
    """The data directory's own key file, created with one random key for tenant ``local`` if absent."""
    path = data_dir / KEYS_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"local:{secrets.token_urlsafe(24)}\n")
    first = next(line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return path, first.partition(":")[2].strip()


def _settings(args: argparse.Namespace) -> tuple[ServiceSettings, str]:
    """The service settings and a line telling the user which key to send."""
    settings = ServiceSettings.from_env()
    if args.anonymous_tenant:
        settings = settings.model_copy(update={"anonymous_tenant": args.anonymous_tenant})
    if args.keys_file is not None:
        if not args.keys_file.is_file():
            raise UsageError(f"--keys-file {args.keys_file} is not a file")
        return settings.model_copy(update={"api_keys_file": args.keys_file}), f"API keys: from {args.keys_file}"
    if settings.api_keys or settings.api_keys_file:
        return settings, "API keys: from COMFYSERVE_API_KEYS / COMFYSERVE_API_KEYS_FILE"
    path, key = local_key(args.data)
    hint = f"API key (tenant 'local', kept in {path}): send the header  x-api-key: {key}"
    return settings.model_copy(update={"api_keys_file": path}), hint


def run(args: argparse.Namespace) -> int:
    from comfyserve.localstack.stack import LocalStack

    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give 1 or more (with no worker, every job would stay queued)")
    try:
        cache = CachePolicy(lru=args.cache_lru, none=args.cache_none)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.models is not None and not args.models.is_dir():
        raise UsageError(f"--models {args.models} is not a directory")
    if args.backend == "comfyui" and (args.comfyui_dir is None or not (args.comfyui_dir / "main.py").is_file()):
        raise UsageError("--backend comfyui needs --comfyui-dir (or COMFYUI_DIR): a ComfyUI checkout")
    models = args.models if args.models is not None else args.data / "models"
    fresh = not args.data.exists()
    try:
        settings, hint = _settings(args)
        stack = LocalStack(
            args.data,
            args.port,
            args.workers,
            host=args.host,
            settings=settings,
            models_dir=models,
            custom_nodes=args.custom_nodes,
            backend=args.backend,
            comfyui_dir=args.comfyui_dir,
            comfyui_python=args.comfyui_python,
            cache=cache,
        )
        stack.start()
    except BaseException:
        if fresh:
            shutil.rmtree(args.data, ignore_errors=True)
        raise
    models.mkdir(parents=True, exist_ok=True)
    return _serve(stack, args, hint, models)


def _serve(stack: LocalStack, args: argparse.Namespace, hint: str, models: Path) -> int:
    """Until the first Ctrl-C (or SIGTERM): print job state changes; then drain, or kill on a second one."""
    from comfyserve.localstack.job_log import JobLog

    stopping = threading.Event()
    killed = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            killed.set()
            stack.kill_workers()
        stopping.set()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    job_log = JobLog(stack.adapters.bus.path, lambda line: print(line, flush=True))
    try:
        if args.backend == "comfyui":
            print(f"starting ComfyUI in each worker… (meanwhile {stack.url}/v1/health says starting)", flush=True)
            try:
                stack.wait_ready()  # the catalog the API validates against is ComfyUI's from here on
            except (RuntimeError, TimeoutError) as exc:
                raise UsageError(f"ComfyUI did not start (its log is in {stack.data_dir}/work/): {exc}") from None
        print(f"comfyserve serving on {stack.url} ({args.workers} worker(s), data in {stack.data_dir})")
        print(hint)
        print(f"models: {models.resolve()} (checkpoints/, loras/, vae/ …; read when serve starts)")
        print(f"ComfyUI clients: POST {stack.url}/prompt, websocket {stack.url.replace('http', 'ws', 1)}/ws")
        print("Ctrl-C to stop", flush=True)
        job_log.start()
        while not stopping.wait(1.0):
            pass
    finally:
        print("stopping: draining workers (Ctrl-C again to stop at once)…", flush=True)
        stack.stop()
        if killed.is_set():
            print("stopped at once: the jobs the workers held run again at the next start", flush=True)
        job_log.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
