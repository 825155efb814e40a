"""``comfyserve submit FILE --endpoint URL [--api-key KEY] [--wait] [--out DIR] [--input NAME=PATH ...]``.

Submits a workflow to the HTTP API (the local server or the cloud API alike); with ``--wait`` it shows the
job's progress until it finishes and downloads the outputs. Without a key the request goes without one (a
server started with ``--anonymous-tenant`` serves it). Exit status: 0 accepted (with ``--wait``: succeeded);
1 the workflow or request was refused (400, as ``validate`` exits 1), or the job did not succeed; 2 any other
error (a missing key, the server unreachable or unavailable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from comfyserve.commands.api_client import TERMINAL, ApiError, Client
from comfyserve.commands.common import UsageError, parse_inputs, read_workflow
from comfyserve.commands.validate import describe_invalid

API_KEY_ENV = "COMFYSERVE_API_KEY"
REFUSED = frozenset({400, 413, 422})  # the request itself was refused: exit 1
SERVER_MODELS_FIX = "the server does not hold them (a local server takes them from: comfyserve serve --models DIR)"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("submit", help="submit a workflow to a comfyserve endpoint")
    parser.add_argument(
        "file",
        type=Path,
        help="workflow JSON (API format, {'prompt': ...}, or the editor's format: the server converts it)",
    )
    parser.add_argument(
        "--endpoint", required=True, help="the API's base URL, e.g. http://127.0.0.1:8188 (host:port means http://)"
    )
    parser.add_argument(
        "--api-key", help=f"your API key (default: ${API_KEY_ENV}; none for a server with --anonymous-tenant)"
    )
    parser.add_argument(
        "--input", action="append", default=[], metavar="NAME=PATH", help="a LoadImage value and its local file"
    )
    parser.add_argument("--format", choices=("png", "webp", "jpeg"), default="png", help="output image format")
    parser.add_argument("--quality", type=int, help="webp/jpeg quality (1-100)")
    parser.add_argument("--timeout", type=int, dest="timeout_s", help="the job's execution time limit (s)")
    parser.add_argument("--wait", action="store_true", help="show progress until the job finishes")
    parser.add_argument("--out", type=Path, help="with --wait: download the outputs here")
    parser.set_defaults(func=run)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    output: dict[str, Any] = {"format": args.format}
    if args.quality is not None:
        output["quality"] = args.quality
    options: dict[str, Any] = {"output": output}
    if args.timeout_s is not None:
        options["timeout_s"] = args.timeout_s
    return options


class ProgressPrinter:
    """Prints a line whenever a polled job view shows a new status or progress; the final status is left to the
    caller's summary. ``last`` is a line already printed (``queued`` after the submit's own line)."""

    def __init__(self, stream: TextIO | None = None, last: str = "") -> None:
        self.stream = stream or sys.stdout
        self.last = last

    def __call__(self, view: dict[str, Any]) -> None:
        if view["status"] in TERMINAL:
            return
        line = describe(view)
        if line != self.last:
            self.last = line
            print(line, file=self.stream, flush=True)


def describe(view: dict[str, Any]) -> str:
    progress = view.get("progress") or {}
    text = view["status"]
    if view["status"] == "running" and progress.get("nodes_total"):
        text += f" {progress.get('nodes_done', 0)}/{progress.get('nodes_total', 0)} nodes"
        if progress.get("node") is not None:
            text += f", node {progress['node']}"
        if progress.get("max"):
            text += f" step {progress.get('step', 0)}/{progress['max']}"
    return text


def seconds(value: Any) -> str:
    """A duration for people: ``196.4 s``, ``0.03 s``; ``? s`` when the server gave none."""
    if not isinstance(value, int | float):
        return "? s"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2g} s"


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    if args.out is not None and not args.wait:
        raise UsageError("--out needs --wait")
    client = Client(args.endpoint, api_key)
    try:
        accepted = client.submit(read_workflow(args.file), parse_inputs(args.input), **_options(args))
    except ApiError as exc:
        if exc.status == 401 and not api_key:
            raise UsageError(f"the server wants an API key: give --api-key or set {API_KEY_ENV}") from None
        if exc.status not in REFUSED:
            raise
        refusal = describe_invalid(exc.error, exc.node_errors, SERVER_MODELS_FIX) if exc.node_errors else str(exc)
        print(refusal, file=sys.stderr)  # and exit 1, as validate does
        return 1
    job_id = accepted["job_id"]
    if not args.wait:
        print(json.dumps(accepted, indent=2))
        return 0
    print(f"job {job_id} queued")
    view = client.wait(job_id, ProgressPrinter(last="queued"))
    timings = view.get("timings") or {}
    if view["status"] == "succeeded":
        print(f"succeeded in {seconds(timings.get('execution_s'))} (queued {seconds(timings.get('queued_s'))})")
        for output in view.get("outputs", []):
            print(f"output {output['filename']} ({output['size']} bytes)")
        if args.out is not None:
            for path in client.download_outputs(view, args.out):
                print(f"wrote {path}")
        return 0
    error = view.get("error") or {}
    where = f" at node {error['node_id']} ({error.get('node_type')})" if error.get("node_id") else ""
    print(f"{view['status']}{where}: {error.get('type', '')} {error.get('message', '')}".rstrip(), file=sys.stderr)
    return 1
