"""The converter against ComfyUI's own editor: every template the editor converted, the same API prompt.

The pairs come from `make test-ui-oracle` (tests/ui_oracle/generate.py): ComfyUI's editor in a headless
browser converted each template of the pinned `comfyui-workflow-templates-json` package with the catalog
ComfyUI served (object_info.json.gz, beside the pairs). The templates come from that package (a dev
dependency), so the data here holds only the editor's output.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.ui_workflow import UIWorkflowError, to_api_prompt
from comfyserve.ui_workflow.widgets import LOAD_3D_CLASSES

ORACLE = Path(__file__).resolve().parents[1] / "data" / "ui_oracle"
TEMPLATES = "comfyui-workflow-templates-json"


def _load(name: str) -> Any:
    return json.loads(gzip.decompress((ORACLE / name).read_bytes()))


ORACLE_DATA = _load("pairs.json.gz")
VERSIONS = ORACLE_DATA["versions"]
PAIRS: dict[str, Any] = ORACLE_DATA["pairs"]
# The templates are newer than the editor's ComfyUI: where one uses a node type its catalog lacks, the editor
# sends that node without class_type (and its widget values under made-up names). The converter refuses such
# a workflow; with keep_unknown it sends such a node with its links, which is what is compared for it.
LACKING = set(n for n, prompt in PAIRS.items() if not all(node.get("class_type") for node in prompt.values()))


@cache
def object_info() -> dict[str, Any]:
    document: dict[str, Any] = _load("object_info.json.gz")
    return document


@cache
def specs() -> dict[str, Any]:
    return Catalog.from_object_info(object_info()).specs


@cache
def template_files() -> dict[str, Path]:
    files = importlib.metadata.files(TEMPLATES) or []
    return {f.stem: Path(str(f.locate())) for f in files if f.suffix == ".json" and "/templates/" in f"/{f}"}


def template(name: str) -> Any:
    return json.loads(template_files()[name].read_text(encoding="utf-8"))


def convert(name: str, **options: Any) -> dict[str, Any]:
    now = datetime.fromisoformat(VERSIONS["fixed_time"]).astimezone(UTC).replace(tzinfo=None)
    return to_api_prompt(template(name), specs(), now=now, choose=lambda options: options[0], **options)


def js_numbers(value: Any) -> Any:
    """JavaScript has one number type: a file's ``5.0`` is the editor's ``5``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: js_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [js_numbers(v) for v in value]
    return value


def comparable(prompt: dict[str, Any], untitled: set[str]) -> str:
    """The prompt as canonical JSON (NaN equals NaN there, 5.0 is 5); a node without class_type keeps only
    its links, the nodes in ``untitled`` lose their title, and a 3D loader its ``image``."""
    kept: dict[str, Any] = {}
    for node_id, node in prompt.items():
        if not node.get("class_type"):
            links = {k: v for k, v in node["inputs"].items() if isinstance(v, list) and len(v) == 2}
            kept[node_id] = {"links": links}
        else:
            kept[node_id] = {**node, "_meta": None} if node_id in untitled else node
            if node["class_type"] in LOAD_3D_CLASSES:  # the editor sends a capture of its 3D viewer
                kept[node_id] = {**kept[node_id], "inputs": {k: v for k, v in node["inputs"].items() if k != "image"}}
    return json.dumps(js_numbers(kept), sort_keys=True)


def default_titles(prompt: dict[str, Any]) -> set[str]:
    """Nodes titled by their class where the catalog's display_name is null: the editor names those from its
    own translation files, which no catalog carries; the converter uses the class name."""
    nameless = {name for name, info in object_info().items() if info.get("display_name") is None}
    return {
        k
        for k, node in prompt.items()
        if node["class_type"] in nameless and node["_meta"]["title"] == node["class_type"]
    }


def test_the_templates_are_the_ones_the_editor_converted() -> None:
    assert importlib.metadata.version(TEMPLATES) == VERSIONS["templates_version"]
    assert set(PAIRS) | set(ORACLE_DATA["failures"]) == set(template_files()) - {"fuse_options"} - {
        n for n in template_files() if n.startswith("index")
    }


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_converts_as_the_editor(name: str) -> None:
    converted = convert(name, keep_unknown=True)
    untitled = default_titles(converted)
    assert comparable(converted, untitled) == comparable(PAIRS[name], untitled)
    if name in LACKING:  # without keep_unknown, refused naming the node
        with pytest.raises(UIWorkflowError, match=r"^node \S+ .*node type '.+' is not in this catalog$"):
            convert(name)


@pytest.mark.parametrize("name", sorted(ORACLE_DATA["failures"]))
def test_the_templates_the_editor_failed_on_are_refused_with_this_catalog(name: str) -> None:
    # The editor failed on them (the reason is recorded); with its catalog they use node types it lacks.
    with pytest.raises(UIWorkflowError, match=r"node type '.+' is not in this catalog$"):
        convert(name)


def test_a_primitive_inside_a_subgraph_reaches_its_widgets() -> None:
    # The editor reads such a primitive's links in the root graph: here link 243 is not there and it throws.
    assert "target_id" in ORACLE_DATA["failures"]["templates_graphic_design_recomposer"]
    # Here they are read in the subgraph, where they are: the primitive (143:156) is not sent, its targets are.
    converted = convert("templates_graphic_design_recomposer", keep_unknown=True)
    assert "143:156" not in converted and {"143:130", "143:157"} <= set(converted)
