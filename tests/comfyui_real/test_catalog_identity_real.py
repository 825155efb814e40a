"""The built-in engine's catalog entries for the node packs that pin ComfyUI's (``tests/data/comfyui_object_info``)
equal the live ComfyUI's ``/object_info``, and the pinned reference is still what that ComfyUI serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.unit.test_nodes_utils import _comparable

REFERENCES = Path(__file__).resolve().parents[1] / "data" / "comfyui_object_info"


def _entry(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in ("python_module", "comfyserve")}


def test_pinned_classes_equal_the_live_comfyui_s(backend: ComfyUIBackend) -> None:
    live = backend.object_info()
    ours = Catalog.packaged().to_object_info()
    references = sorted(REFERENCES.glob("*.json"))
    assert references
    for reference_file in references:
        for name, reference in json.loads(reference_file.read_text()).items():
            assert _entry(live[name]) == _entry(reference), f"{reference_file.name}: {name} changed in ComfyUI"
            # V3 nodes' entries carry what the engine's catalog writes its own way (null display names …)
            assert _comparable(ours[name]) == _comparable(live[name]), name
