"""ComfyUI's ``/object_info`` as comfyserve's catalog: the edge then validates against what the fleet's ComfyUI
really serves (core, extras, custom nodes; model lists are the loaders' combo options, as ComfyUI checks them),
and serves it as ComfyUI serves it: the entries are ComfyUI's own, unchanged (the edge reads ComfyUI's upload
flags and V3 hidden inputs as they are, see :mod:`comfyserve.engine.spec`). An optional allowlist (and denylist)
keeps only the node classes a fleet accepts.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import CatalogError


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
        document[name] = info
    Catalog.from_object_info(document)  # every entry must be readable by the edge
    return document


def read_allowlist(text: str) -> set[str]:
    """Node class names, one a line; blank lines and ``#`` comments ignored."""
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}
