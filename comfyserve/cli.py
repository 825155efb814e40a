"""The ``comfyserve`` command: each subcommand lives in its own module under ``comfyserve.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from comfyserve import __version__
from comfyserve.engine.errors import ComfyServeError

COMMAND_MODULES: tuple[str, ...] = (
    "comfyserve.commands.validate",
    "comfyserve.commands.catalog",
    "comfyserve.commands.comfyui",
    "comfyserve.commands.run",
    "comfyserve.commands.make_test_models",
    "comfyserve.commands.models",
    "comfyserve.commands.serve",
    "comfyserve.commands.submit",
    "comfyserve.commands.worker",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfyserve", description="Run ComfyUI API-format workflows.")
    parser.add_argument("--version", action="version", version=f"comfyserve {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
