"""ComfyUI's ``/object_info`` as comfyserve's catalog: the edge then validates against what the fleet's ComfyUI
really serves (core, extras, custom nodes; model lists are the loaders' combo options, as ComfyUI checks them).

Two adjustments, both so the edge refuses what ComfyUI would refuse: inputs that take an uploaded file
(``image_upload``, ``video_upload``, ``audio_upload`` …) get comfyserve's ``image_upload`` option (ComfyUI checks
those values against its input folder, which the edge does not have; the edge matches them to the tenant's
uploads instead), and an optional allowlist (and denylist) keeps only the node classes a fleet accepts. V3
hidden inputs (``["PROMPT"]``) are written the classic way (``"PROMPT"``).
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import CatalogError
from comfyserve.engine.node_api import IMAGE_UPLOAD


def _normalise(info: dict[str, Any]) -> None:
    hidden = (info.get("input") or {}).get("hidden") or {}
    for name, entry in hidden.items():  # V3 nodes list hidden inputs as ["PROMPT"], classic ones as "PROMPT"
        if isinstance(entry, list) and entry:
            hidden[name] = entry[0]
    for kind in ("required", "optional"):
        for entry in ((info.get("input") or {}).get(kind) or {}).values():
            if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], dict):
                continue
            options = entry[1]
            if any(key.endswith("_upload") and value for key, value in options.items()):
                options[IMAGE_UPLOAD] = True


def export_catalog(
    object_info: dict[str, Any], allow: Collection[str] | None = None, deny: Collection[str] = ()
) -> dict[str, Any]:
    """The catalog document (``/object_info`` shape) for ``object_info``; with ``allow``, only those classes;
    never the ``deny`` ones.

    Raises :class:`CatalogError` naming the entry comfyserve cannot read."""
    document: dict[str, Any] = {}
    for name, info in object_info.items():
        if (allow is not None and name not in allow) or name in deny:
            continue
        if not isinstance(info, dict):
            raise CatalogError(f"object_info entry {name!r} is not an object")
        entry = copy.deepcopy(info)
        _normalise(entry)
        document[name] = entry
    Catalog.from_object_info(document)  # every entry must be readable by the edge
    return document


def read_allowlist(text: str) -> set[str]:
    """Node class names, one a line; blank lines and ``#`` comments ignored."""
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}
