"""The node registry: node classes from built-in packs and ``custom_nodes`` directories.

A pack is any module exporting ``NODE_CLASS_MAPPINGS`` (and optionally ``NODE_DISPLAY_NAME_MAPPINGS``) or a V3
``comfy_entrypoint()``. Before loading ``custom_nodes`` the loader installs :mod:`comfyserve.compat`, so a pack
written for ComfyUI that imports ``comfy.utils``, ``comfy_execution``, ``comfy_api``, ``folder_paths`` or
``server`` loads unchanged. A pack that fails to
import is recorded with its error and skipped; custom packs never override built-in names (as in ComfyUI).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from comfyserve import compat
from comfyserve.engine.spec import NodeSpec


@dataclass(frozen=True)
class PackFailure:
    """A pack that could not be loaded, with the one-line reason and the traceback for the logs."""

    pack: str
    error: str
    traceback: str


@dataclass
class NodeFilter:
    """Allowlist / denylist of node class names; an empty allowlist allows everything."""

    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def admits(self, name: str) -> bool:
        return name not in self.deny and (not self.allow or name in self.allow)


@dataclass
class NodeRegistry:
    node_filter: NodeFilter = field(default_factory=NodeFilter)
    classes: dict[str, type] = field(default_factory=dict)
    display_names: dict[str, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    failures: list[PackFailure] = field(default_factory=list)
    _builtin: set[str] = field(default_factory=set)
    _specs: dict[str, NodeSpec] = field(default_factory=dict)

    def register_mappings(
        self,
        mappings: Mapping[str, Any],
        *,
        display_names: Mapping[str, str] | None = None,
        module: str,
        builtin: bool,
    ) -> list[str]:
        """Add classes; returns the names added. Custom packs cannot replace built-in names."""
        added = []
        for name, node_class in mappings.items():
            if not self.node_filter.admits(name) or (not builtin and name in self._builtin):
                continue
            self.classes[name] = node_class
            self.modules[name] = module
            self._specs.pop(name, None)
            if display_names and name in display_names:
                self.display_names[name] = display_names[name]
            if builtin:
                self._builtin.add(name)
            added.append(name)
        return added

    def load_module(self, module: ModuleType | str, *, builtin: bool = True) -> list[str]:
        """Register the ``NODE_CLASS_MAPPINGS`` of a module (or an importable module name)."""
        name = module if isinstance(module, str) else module.__name__
        try:
            mod = importlib.import_module(module) if isinstance(module, str) else module
            mappings = _v3_mappings(mod) if hasattr(mod, "comfy_entrypoint") else mod.NODE_CLASS_MAPPINGS
        except Exception as exc:
            self._fail(name, exc)
            return []
        v3_names = {k: c._schema.display_name for k, c in mappings.items() if getattr(c, "_schema", None)}
        return self.register_mappings(
            mappings,
            display_names={
                **{k: v for k, v in v3_names.items() if v},
                **getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}),
            },
            module=name,
            builtin=builtin,
        )

    def load_custom_nodes(self, directory: Path) -> list[str]:
        """Load every pack in ``directory``: ``*.py`` files and packages; ``*.disabled`` and ``_*`` are skipped."""
        added: list[str] = []
        if not directory.is_dir():
            return added
        compat.install()
        for entry in sorted(directory.iterdir()):
            if entry.name.startswith(("_", ".")) or entry.name.endswith(".disabled"):
                continue
            if entry.is_file() and entry.suffix == ".py":
                added += self._load_path(entry.stem, entry)
            elif entry.is_dir() and (entry / "__init__.py").is_file():
                added += self._load_path(entry.name, entry / "__init__.py", package_dir=entry)
        return added

    def _load_path(self, name: str, path: Path, package_dir: Path | None = None) -> list[str]:
        module_name = f"comfyserve_custom_nodes.{name}"
        try:
            spec = importlib.util.spec_from_file_location(
                module_name, path, submodule_search_locations=[str(package_dir)] if package_dir else None
            )
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            self._fail(str(path), exc)
            return []
        return self.load_module(module, builtin=False)

    def _fail(self, pack: str, exc: BaseException) -> None:
        self.failures.append(
            PackFailure(pack, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc)))
        )

    def spec(self, name: str) -> NodeSpec:
        """The class's contract, read once (loaders' file lists are re-read by :meth:`refresh`)."""
        if name not in self._specs:
            self._specs[name] = NodeSpec.from_class(
                name, self.classes[name], display_name=self.display_names.get(name, ""), module=self.modules[name]
            )
        return self._specs[name]

    def specs(self) -> dict[str, NodeSpec]:
        return {name: self.spec(name) for name in self.classes}

    def refresh(self) -> None:
        """Forget cached specs, so ``INPUT_TYPES`` is called again (after the model inventory changed)."""
        self._specs.clear()

    def __contains__(self, name: object) -> bool:
        return name in self.classes


def _v3_mappings(module: ModuleType) -> dict[str, Any]:
    """A V3 pack's nodes, from its ``comfy_entrypoint()`` extension (``NODE_CLASS_MAPPINGS`` too, if any)."""

    async def node_list() -> list[Any]:
        extension = module.comfy_entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        await extension.on_load()
        return list(await extension.get_node_list())

    nodes = asyncio.run(node_list())
    return {**getattr(module, "NODE_CLASS_MAPPINGS", {}), **{node._schema.node_id: node for node in nodes}}


def build_registry(
    packs: Iterable[str],
    *,
    custom_nodes: Iterable[Path] = (),
    node_filter: NodeFilter | None = None,
) -> NodeRegistry:
    registry = NodeRegistry(node_filter=node_filter or NodeFilter())
    for pack in packs:
        registry.load_module(pack, builtin=True)
    for directory in custom_nodes:
        registry.load_custom_nodes(directory)
    return registry
