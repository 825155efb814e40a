"""The built-in engine's catalog entries for the node packs that pin ComfyUI's (``tests/data/comfyui_object_info``)
equal the live ComfyUI's ``/object_info``, and the pinned reference is still what that ComfyUI serves."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.worker.comfyui import ComfyUIBackend

REFERENCES = Path(__file__).resolve().parents[1] / "data" / "comfyui_object_info"


def _entry(info: dict[str, Any], file_inputs: set[str]) -> dict[str, Any]:
    """An entry less what differs by machine: the options of ``file_inputs`` (model-file inputs) are the files
    there, and comfyserve marks the folder they come from."""
    entry = copy.deepcopy({k: v for k, v in info.items() if k not in ("python_module", "comfyserve")})
    for declared in entry.get("input", {}).values():
        for name in file_inputs & set(declared):
            declared[name][1] = {k: v for k, v in declared[name][1].items() if k not in ("model_folder", "options")}
    return entry


def _file_inputs(info: dict[str, Any]) -> set[str]:
    """The inputs of an entry of ours that name model files."""
    return {n for declared in info["input"].values() for n, config in declared.items() if "model_folder" in config[-1]}


def test_pinned_classes_equal_the_live_comfyui_s(backend: ComfyUIBackend) -> None:
    live = backend.object_info()
    ours = Catalog.packaged().to_object_info()
    references = sorted(REFERENCES.glob("*.json"))
    assert references
    for reference_file in references:
        for name, reference in json.loads(reference_file.read_text()).items():
            files = _file_inputs(ours[name])
            assert _entry(live[name], files) == _entry(reference, files), f"{reference_file.name}: {name} changed"
            assert _entry(ours[name], files) == _entry(live[name], files), name
