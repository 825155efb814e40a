"""The Lambda bundle (``make lambda-bundle``): built for arm64 CPython, complete for every handler, and light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra.constructs.functions import HANDLERS
from infra.lambda_bundle import BUNDLE_DIR, FORBIDDEN_DISTRIBUTIONS, RUNTIME_VERSION, build

MAX_BUNDLE_BYTES = 120 * 1024 * 1024  # Lambda's limit is 250 MB unzipped; today's bundle is about 66 MB


@pytest.fixture(scope="module", autouse=True)
def fresh_bundle() -> None:
    """Today's sources in the bundle (the dependencies are reinstalled only if pyproject.toml changed them).
    A missing bundle fails every test here: a skip would hide that the bundle was never checked."""
    if not (BUNDLE_DIR / "lambdas").is_dir():
        pytest.fail(f"no Lambda bundle in {BUNDLE_DIR}: run `make lambda-bundle` first (make test does)")
    build()


def _first_party_imports(path: Path) -> set[str]:
    """Modules of comfyserve/lambdas that ``path`` imports at any level (absolute imports, as the code uses)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ("comfyserve", "lambdas")}


def _module_file(name: str) -> Path | None:
    base = BUNDLE_DIR.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package_attribute(name: str) -> bool:
    """``from comfyserve.x import name`` where ``name`` is a function or class, not a module."""
    parent = _module_file(name.rpartition(".")[0])
    return parent is not None and _module_file(name) is None


def test_every_module_a_handler_reaches_is_in_the_bundle() -> None:
    missing: dict[str, str] = {}
    seen: set[str] = set()
    todo = [f"lambdas.{handler}" for handler in HANDLERS]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            if not _is_package_attribute(name):
                missing[name] = "not in the bundle"
            continue
        todo.extend(_first_party_imports(path))
    assert missing == {}
    assert {f"lambdas.{handler}" for handler in HANDLERS} <= seen


def test_dependencies_are_built_for_arm64_cpython_of_the_runtime() -> None:
    tag = f"cpython-{RUNTIME_VERSION.replace('.', '')}-aarch64-linux-gnu"
    extensions = list(BUNDLE_DIR.rglob("*.so"))
    assert any(path.parent.name == "pydantic_core" for path in extensions)
    wrong = [path.name for path in extensions if "cpython-" in path.name and tag not in path.name]
    assert wrong == []


def test_no_heavy_distribution_and_bounded_size() -> None:
    tops = {path.name.split("-")[0].lower() for path in BUNDLE_DIR.iterdir()}
    assert tops.isdisjoint(FORBIDDEN_DISTRIBUTIONS)
    assert not (BUNDLE_DIR / "comfyserve" / "nodes").exists()
    assert not (BUNDLE_DIR / "comfyserve" / "models").exists()
    size = sum(path.stat().st_size for path in BUNDLE_DIR.rglob("*") if path.is_file())
    assert size < MAX_BUNDLE_BYTES
    for handler in HANDLERS:
        assert "def handler(" in (BUNDLE_DIR / "lambdas" / f"{handler}.py").read_text(encoding="utf-8")


def test_local_bundling_copies_the_bundle_into_the_asset(tmp_path: Path) -> None:
    from infra.constructs.functions import _PreparedBundle

    asset = tmp_path / "asset"
    asset.mkdir()
    assert _PreparedBundle().try_bundle(str(asset), object()) is True  # jsii passes the options positionally
    assert (asset / "lambdas" / "api.py").is_file() and (asset / "pydantic_core").is_dir()
    assert not (asset / "comfyserve" / "models").exists()
    assert not list(asset.glob(".dependencies-stamp"))
