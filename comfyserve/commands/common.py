"""Helpers shared by subcommands: reading workflow files and parsing ``NAME=PATH`` options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from comfyserve.engine.errors import ComfyServeError
from comfyserve.engine.prompt_format import load_document, workflow_from_json
from comfyserve.engine.spec import NodeSpec
from comfyserve.ui_workflow import is_ui_workflow, to_api_prompt


class UsageError(ComfyServeError):
    """A command-line argument names something that is not there or is malformed."""


def read_workflow(path: Path) -> dict[str, Any]:
    """The file's workflow: an API prompt, or the editor's workflow as it is (a server converts it)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    document = load_document(raw)
    return document if is_ui_workflow(document) else workflow_from_json(document)


def read_api_prompt(path: Path, specs: Mapping[str, NodeSpec]) -> dict[str, Any]:
    """The file's API prompt: the editor's workflow is converted with the catalog ``specs``."""
    document = read_workflow(path)
    return to_api_prompt(document, specs) if is_ui_workflow(document) else document


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
