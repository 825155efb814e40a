"""``comfyserve run FILE --out DIR``: run a workflow locally, write its outputs and ``manifest.json``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from comfyserve.commands.common import UsageError, parse_inputs, read_api_prompt
from comfyserve.commands.console import ConsoleProgress
from comfyserve.commands.validate import describe_invalid
from comfyserve.engine.inventory import ModelInventory


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run a workflow locally and write its outputs")
    parser.add_argument("file", type=Path, help="workflow JSON (API format, or the editor's format)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--models", type=Path, help="models directory (checkpoints/, loras/, vae/ ...)")
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=PATH", help="a LoadImage value and its local file"
    )
    parser.add_argument("--custom-nodes", type=Path, action="append", default=[], help="a custom_nodes directory")
    parser.add_argument("--keep-going", action="store_true", help="let independent outputs finish after a failure")
    parser.set_defaults(func=run)


INTERRUPTED_EXIT = 130


@contextmanager
def stop_on_ctrl_c() -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (the run stops between sampling steps); a second one stops at once."""
    stop = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("comfyserve run: stopping after the current step (Ctrl-C again to quit at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    from comfyserve.engine.executor import Executor
    from comfyserve.nodes import builtin_registry
    from comfyserve.worker.run_local import LocalRun, WorkflowInvalid, run_workflow

    if args.models is not None and not args.models.is_dir():
        raise UsageError(f"--models {args.models} is not a directory")
    inventory = ModelInventory.scan(args.models) if args.models else ModelInventory()
    registry = builtin_registry(custom_nodes=args.custom_nodes)
    for failure in registry.failures:
        print(f"comfyserve run: skipped node pack {failure.pack}: {failure.error}", file=sys.stderr)
    prompt = read_api_prompt(args.file, registry.specs())
    inputs = parse_inputs(args.input)
    executor = Executor(registry)
    try:
        with stop_on_ctrl_c() as stop:
            local = LocalRun(
                out_dir=args.out, models=inventory, inputs=inputs, keep_going=args.keep_going, cancel_check=stop.is_set
            )
            result, manifest = run_workflow(prompt, local, registry, executor, on_event=ConsoleProgress(prompt))
    except WorkflowInvalid as exc:
        print(describe_invalid(exc.result.error or {}, exc.result.node_errors), file=sys.stderr)
        return 1
    finally:
        executor.close()
    for output in manifest["outputs"]:
        print(f"wrote {output['path']}")
    print(f"manifest: {args.out / 'manifest.json'} ({result.status})")
    if result.status == "interrupted":
        print("comfyserve run: interrupted by Ctrl-C; the manifest records where it stopped", file=sys.stderr)
        return INTERRUPTED_EXIT
    if result.status != "success":
        for error in result.errors:
            print(
                f"comfyserve run: node {error.get('node_id')} ({error.get('node_type')}) failed: "
                f"{error.get('exception_message', '').strip()}",
                file=sys.stderr,
            )
        return 1
    return 0
