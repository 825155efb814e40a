"""ComfyUI's ``/object_info`` as comfyserve's catalog: the edge then validates against what the fleet's ComfyUI
really serves (core, extras, custom nodes; model lists are the loaders' combo options, as ComfyUI checks them).

Two adjustments, both so the edge refuses exactly what ComfyUI would refuse: inputs that take an uploaded file
(``image_upload``, ``video_upload``, ``audio_upload`` …) get comfyserve's ``image_upload`` option (ComfyUI checks
those values against its input folder, which the edge does not have; the edge matches them to the tenant's
uploads instead), and an optional allowlist keeps only the node classes a fleet accepts.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import CatalogError
from comfyserve.engine.node_api import IMAGE_UPLOAD


def _mark_uploads(info: dict[str, Any]) -> None:
    for kind in ("required", "optional"):
        for entry in ((info.get("input") or {}).get(kind) or {}).values():
            if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], dict):
                continue
            options = entry[1]
            if any(key.endswith("_upload") and value for key, value in options.items()):
                options[IMAGE_UPLOAD] = True


def export_catalog(object_info: dict[str, Any], allow: Collection[str] | None = None) -> dict[str, Any]:
    """The catalog document (``/object_info`` shape) for ``object_info``; ``allow`` keeps only those classes.

    Raises :class:`CatalogError` naming the entry comfyserve cannot read."""
    document: dict[str, Any] = {}
    for name, info in object_info.items():
        if allow is not None and name not in allow:
            continue
        if not isinstance(info, dict):
            raise CatalogError(f"object_info entry {name!r} is not an object")
        entry = copy.deepcopy(info)
        _mark_uploads(entry)
        document[name] = entry
    Catalog.from_object_info(document)  # every entry must be readable by the edge
    return document


def read_allowlist(text: str) -> set[str]:
    """Node class names, one a line; blank lines and ``#`` comments ignored."""
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}
