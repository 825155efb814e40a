"""The node catalog: every registered node's contract in ComfyUI's ``/object_info`` shape.

The catalog is the contract between the edge and the workers: the API validates against a catalog
document alone, without importing node code. ``comfyserve catalog`` exports it; the packaged copy
(``catalog.json`` beside this module) is what the Lambda functions load.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyserve.engine.errors import CatalogError
from comfyserve.engine.spec import NodeSpec

if TYPE_CHECKING:  # the registry imports node machinery (asyncio): not needed to read a catalog document
    from comfyserve.engine.registry import NodeRegistry

PACKAGED_CATALOG = "catalog.json"


class Catalog:
    """Node specs by class name, loaded from a registry or from an exported document.

    ``node_classes`` are the classes whose ``VALIDATE_INPUTS`` hooks validation runs: those of a registry the
    process loaded (the local stack's custom nodes), none for a catalog read from a document.
    """

    def __init__(
        self,
        specs: Mapping[str, NodeSpec],
        node_classes: Mapping[str, type] | None = None,
        document: Mapping[str, Any] | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.node_classes = {name: cls for name, cls in (node_classes or {}).items() if name in self.specs}
        self.document = document  # the /object_info document it was read from, served as it is

    @classmethod
    def from_registry(cls, registry: NodeRegistry) -> Catalog:
        return cls(registry.specs(), registry.classes)

    @classmethod
    def from_object_info(cls, document: Any) -> Catalog:
        if not isinstance(document, dict):
            raise CatalogError("a catalog must be a JSON object keyed by node class name")
        return cls({name: NodeSpec.from_object_info(name, info) for name, info in document.items()}, None, document)

    @classmethod
    def load(cls, path: Path) -> Catalog:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"cannot read the catalog {path}: {exc}") from exc
        return cls.from_object_info(document)

    @classmethod
    def packaged(cls) -> Catalog:
        """The catalog shipped with the package (built from the built-in nodes)."""
        text = Path(__file__).with_name(PACKAGED_CATALOG).read_text(encoding="utf-8")  # importlib.resources costs 6 ms
        return cls.from_object_info(json.loads(text))

    def to_object_info(self) -> dict[str, Any]:
        """The document this catalog was read from, as it is (a ComfyUI's ``/object_info``: its order, its
        ``null`` display names, ``deprecated``, ``api_node``, ``output_tooltips`` …); else one built from the
        specs, sorted by class."""
        if self.document is not None:
            return copy.deepcopy(dict(self.document))
        return {name: spec.to_object_info() for name, spec in sorted(self.specs.items())}

    def dumps(self) -> str:
        # Not sort_keys: the order of a node's inputs is part of its contract (positional clients, widgets).
        return json.dumps(self.to_object_info(), indent=1) + "\n"

    @property
    def starting(self) -> bool:
        """Whether this catalog stands in for one the fleet has not published yet (its ComfyUI is starting)."""
        return False

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __len__(self) -> int:
        return len(self.specs)
