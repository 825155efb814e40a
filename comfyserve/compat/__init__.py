"""The module surface ComfyUI node packs import (``comfy.utils``, ``comfy.comfy_types``, ``comfy_execution``,
``comfy_api``, ``folder_paths``, ``server`` ...), implemented over comfyserve's engine.

Nothing here is active until :func:`install` runs; the node loader calls it before importing a
``custom_nodes`` pack. It maps those top-level names onto ``comfyserve.compat.<name>`` for the rest of the
process (packs import lazily inside their functions too). Names already imported are left alone.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

ALIASES = ("comfy", "comfy_execution", "comfy_api", "folder_paths", "server")


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``comfy.utils`` to the already-importable ``comfyserve.compat.comfy.utils`` (same object)."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in ALIASES:
            return None
        real = importlib.util.find_spec(f"{__name__}.{fullname}")
        if real is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=real.submodule_search_locations is not None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(f"{__name__}.{spec.name}")

    def exec_module(self, module: ModuleType) -> None:
        """The module ran when :meth:`create_module` imported it under its own name."""


_FINDER = _AliasFinder()


def install() -> None:
    """Make ComfyUI's module names importable in this process (idempotent)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def installed() -> bool:
    return _FINDER in sys.meta_path
