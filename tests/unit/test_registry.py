"""The registry: packs from modules and custom_nodes folders, filters, failures, and the catalog contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.errors import CatalogError
from comfyserve.engine.registry import NodeFilter, NodeRegistry, build_registry
from tests.unit import validation_nodes

DROP_IN_NODE = '''
class ImageResizePlus:
    """A ComfyUI custom node written for ComfyUI, importing nothing from it."""

    @classmethod
    def INPUT_TYPES(s):
        return {
            "required": {
                "image": ("IMAGE",),
                "width": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 8}),
                "interpolation": (["nearest", "bilinear"],),
            }
        }

    RETURN_TYPES = ("IMAGE", "INT")
    RETURN_NAMES = ("IMAGE", "width")
    FUNCTION = "execute"
    CATEGORY = "essentials/image manipulation"

    def execute(self, image, width, interpolation):
        return (image, width)


NODE_CLASS_MAPPINGS = {"ImageResize+": ImageResizePlus}
NODE_DISPLAY_NAME_MAPPINGS = {"ImageResize+": "🔧 Image Resize"}
'''


@pytest.fixture()
def custom_nodes(tmp_path: Path) -> Path:
    folder = tmp_path / "custom_nodes"
    (folder / "essentials").mkdir(parents=True)
    (folder / "essentials" / "__init__.py").write_text(DROP_IN_NODE)
    (folder / "broken.py").write_text("import not_a_module_anywhere\n")
    (folder / "override.py").write_text(
        "class Fake:\n    pass\n\nNODE_CLASS_MAPPINGS = {'Save': Fake, 'Extra': Fake}\n"
    )
    (folder / "skipped.py.disabled").write_text("raise SystemExit\n")
    (folder / "off.disabled").mkdir()
    return folder


def test_drop_in_custom_node_loads_unchanged(custom_nodes: Path) -> None:
    registry = build_registry(["tests.unit.validation_nodes"], custom_nodes=[custom_nodes])
    spec = registry.spec("ImageResize+")
    assert spec.display_name == "🔧 Image Resize"
    assert spec.return_names == ("IMAGE", "width")
    assert spec.declared["interpolation"].choices == ("nearest", "bilinear")
    node = registry.classes["ImageResize+"]()
    assert node.execute(image="img", width=64, interpolation="nearest") == ("img", 64)


def test_broken_pack_is_reported_and_skipped(custom_nodes: Path) -> None:
    registry = build_registry(["tests.unit.validation_nodes", "no.such.pack"], custom_nodes=[custom_nodes])
    reasons = {Path(f.pack).name: f.error for f in registry.failures}
    assert reasons == {
        "no.such.pack": "ModuleNotFoundError: No module named 'no'",
        "broken.py": "ModuleNotFoundError: No module named 'not_a_module_anywhere'",
    }
    assert "ImageResize+" in registry  # the other packs still loaded


def test_custom_packs_cannot_override_builtin_names(custom_nodes: Path) -> None:
    registry = build_registry(["tests.unit.validation_nodes"], custom_nodes=[custom_nodes])
    assert registry.classes["Save"] is validation_nodes.Save
    assert "Extra" in registry


def test_allowlist_and_denylist() -> None:
    allow = build_registry(["tests.unit.validation_nodes"], node_filter=NodeFilter(allow=frozenset({"Save"})))
    assert set(allow.classes) == {"Save"}
    deny = build_registry(["tests.unit.validation_nodes"], node_filter=NodeFilter(deny=frozenset({"Save"})))
    assert "Save" not in deny and "Loader" in deny


def test_catalog_export_has_the_object_info_shape() -> None:
    registry = NodeRegistry()
    registry.load_module(validation_nodes)
    info = Catalog.from_registry(registry).to_object_info()
    sampler = info["Sampler"]
    assert sampler["input"]["required"]["sampler_name"] == [["euler", "heun", "dpmpp_2m"]]
    assert sampler["input"]["required"]["steps"] == ["INT", {"default": 20, "min": 1, "max": 10000}]
    assert sampler["input_order"]["required"][:2] == ["model", "seed"]
    assert sampler["output"] == ["IMAGE"] and sampler["output_name"] == ["IMAGE"]
    assert info["Save"]["output_node"] is True and info["Save"]["input"]["hidden"] == {
        "prompt": "PROMPT",
        "extra_pnginfo": "EXTRA_PNGINFO",
    }
    assert info["Loader"]["input"]["required"]["ckpt_name"] == [[], {"model_folder": "checkpoints"}]
    json.dumps(info)


def test_malformed_catalog_documents_are_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="a catalog must be a JSON object keyed by node class name"):
        Catalog.from_object_info([])
    with pytest.raises(CatalogError, match=r"X: input 'a' must be declared as \(TYPE, options\), got 5"):
        Catalog.from_object_info({"X": {"input": {"required": {"a": 5}}}})
    with pytest.raises(CatalogError, match="catalog entry 'X' is malformed"):
        Catalog.from_object_info({"X": {"input": 5}})
    bad = tmp_path / "catalog.json"
    bad.write_text("{oops")
    with pytest.raises(CatalogError, match=f"cannot read the catalog {bad}"):
        Catalog.load(bad)


def test_declaration_errors_name_node_and_input() -> None:
    class Bad:
        @classmethod
        def INPUT_TYPES(cls) -> dict[str, object]:
            return {"required": {"x": 5}}

    registry = NodeRegistry()
    registry.register_mappings({"Bad": Bad}, module="t", builtin=True)
    with pytest.raises(CatalogError, match="Bad: input 'x' must be declared as"):
        registry.spec("Bad")
