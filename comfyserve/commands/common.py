"""Helpers shared by subcommands: reading workflow files and parsing ``NAME=PATH`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.prompt_format import parse_workflow_document


class UsageError(ComfyServeError):
    """A command-line argument names something that is not there or is malformed."""


def read_workflow(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_workflow_document(raw)


def parse_inputs(pairs: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` pairs: NAME is the exact ``LoadImage`` value (a file name or URL), PATH a local file."""
    inputs: dict[str, Path] = {}
    for pair in pairs:
        name, sep, path = pair.rpartition("=")
        if not sep or not name or not path:
            raise UsageError(f"--input expects NAME=PATH, got {pair!r}")
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"--input {name}: {path} is not a file")
        inputs[name] = file
    return inputs
