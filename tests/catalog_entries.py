"""Catalog entries as ComfyUI's ``/object_info`` has them: an entry less comfyserve's additions (its
``comfyserve`` section, ``python_module`` and a model list's ``model_folder`` option)."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.node_api import MODEL_FOLDER


def comparable(info: dict[str, Any]) -> dict[str, Any]:
    return {k: _inputs(v) if k == "input" else v for k, v in info.items() if k not in ("python_module", "comfyserve")}


def _declared(entry: Any) -> Any:
    if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict) and MODEL_FOLDER in entry[1]:
        options = {k: v for k, v in entry[1].items() if k != MODEL_FOLDER}
        return [entry[0], options] if options else [entry[0]]
    return entry


def _inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    return {kind: {name: _declared(entry) for name, entry in group.items()} for kind, group in inputs.items()}
