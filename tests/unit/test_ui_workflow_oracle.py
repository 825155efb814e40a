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

ORACLE = Path(__file__).resolve().parents[1] / "data" / "ui_oracle"
TEMPLATES = "comfyui-workflow-templates-json"


def _load(name: str) -> Any:
    return json.loads(gzip.decompress((ORACLE / name).read_bytes()))


ORACLE_DATA = _load("pairs.json.gz")
VERSIONS = ORACLE_DATA["versions"]
# The editor leaves ``class_type`` out for a node type its ComfyUI lacks: the converter refuses those instead.
COMPLETE = {n: p for n, p in ORACLE_DATA["pairs"].items() if all(node.get("class_type") for node in p.values())}
LACKING = sorted(set(ORACLE_DATA["pairs"]) - set(COMPLETE))


@cache
def specs() -> dict[str, Any]:
    return Catalog.from_object_info(_load("object_info.json.gz")).specs


@cache
def template_files() -> dict[str, Path]:
    files = importlib.metadata.files(TEMPLATES) or []
    return {f.stem: Path(str(f.locate())) for f in files if f.suffix == ".json" and "/templates/" in f"/{f}"}


def template(name: str) -> Any:
    return json.loads(template_files()[name].read_text(encoding="utf-8"))


def convert(name: str) -> dict[str, Any]:
    now = datetime.fromisoformat(VERSIONS["fixed_time"]).astimezone(UTC).replace(tzinfo=None)
    return to_api_prompt(template(name), specs(), now=now, choose=lambda options: options[0])


def test_the_templates_are_the_ones_the_editor_converted() -> None:
    assert importlib.metadata.version(TEMPLATES) == VERSIONS["templates_version"]
    assert set(ORACLE_DATA["pairs"]) | set(ORACLE_DATA["failures"]) <= set(template_files())


@pytest.mark.parametrize("name", sorted(COMPLETE))
def test_converts_as_the_editor(name: str) -> None:
    assert convert(name) == COMPLETE[name]


@pytest.mark.parametrize("name", LACKING)
def test_refuses_what_the_editor_sends_without_a_class(name: str) -> None:
    missing = sorted(k for k, node in ORACLE_DATA["pairs"][name].items() if not node.get("class_type"))
    with pytest.raises(UIWorkflowError, match="is not in this catalog") as caught:
        convert(name)
    assert any(f"node {k.split(':')[-1]} " in str(caught.value) for k in missing)
