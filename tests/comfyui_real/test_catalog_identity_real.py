"""The built-in engine's catalog entries for the node packs that pin ComfyUI's (``tests/data/comfyui_object_info``)
equal the live ComfyUI's ``/object_info``, and the pinned reference is still what that ComfyUI serves."""

from __future__ import annotations

import json
from pathlib import Path

from comfyserve.engine.catalog import Catalog
from comfyserve.worker.comfyui import ComfyUIBackend
from tests.catalog_entries import comparable

REFERENCES = Path(__file__).resolve().parents[1] / "data" / "comfyui_object_info"


def test_pinned_classes_equal_the_live_comfyui_s(backend: ComfyUIBackend) -> None:
    live = backend.object_info()
    ours = Catalog.packaged().to_object_info()
    references = sorted(REFERENCES.glob("*.json"))
    assert references
    for reference_file in references:
        for name, reference in json.loads(reference_file.read_text()).items():
            assert comparable(live[name]) == comparable(reference), f"{reference_file.name}: {name} changed in ComfyUI"
            assert comparable(ours[name]) == comparable(live[name]), name
