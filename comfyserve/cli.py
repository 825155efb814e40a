"""The ``comfyserve`` command: each subcommand lives in its own module under ``comfyserve.commands``.

Only the chosen subcommand's module is imported (``serve`` pulls in the whole local stack, ``run`` the engine),
so ``comfyserve validate`` starts in a fraction of a second; ``--help`` lists every command from the table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from comfyserve import __version__
from comfyserve.engine.errors import ComfyServeError

# name -> (module that registers it, its one-line help; the module's own parser repeats the same help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("comfyserve.commands.validate", "validate a workflow against the node catalog"),
    "convert": ("comfyserve.commands.convert", "print the API prompt an editor's (UI-format) workflow becomes"),
    "catalog": ("comfyserve.commands.catalog", "print the node catalog (object_info JSON)"),
    "nodes": (
        "comfyserve.commands.comfyui",
        "install the locked custom node packs into the ComfyUI backend's checkout",
    ),
    "run": ("comfyserve.commands.run", "run a workflow locally and write its outputs"),
    "make-test-models": (
        "comfyserve.commands.make_test_models",
        "write tiny random-weight checkpoints, LoRAs and VAEs in the layouts real ones use",
    ),
    "models": ("comfyserve.commands.models", "sync, publish and list the model inventory of the models bucket"),
    "tenants": (
        "comfyserve.commands.tenants",
        "add, list and revoke tenants: API keys on the deployed stack's usage plan",
    ),
    "serve": ("comfyserve.commands.serve", "run the local stack: HTTP API, websocket and workers"),
    "submit": ("comfyserve.commands.submit", "submit a workflow to a comfyserve endpoint"),
    "worker": (
        "comfyserve.commands.worker",
        "run the cloud worker: jobs from SQS, results to S3 (settings from the environment)",
    ),
}


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (its first non-option word), if it is one of :data:`COMMANDS`."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s full options (its module imported); every other command by name and help."""
    parser = argparse.ArgumentParser(prog="comfyserve", description="Run ComfyUI workflows.")
    parser.add_argument("--version", action="version", version=f"comfyserve {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv)).parse_args(argv)
    try:
        return int(args.func(args))
    except ComfyServeError as exc:
        print(f"comfyserve {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"comfyserve {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
