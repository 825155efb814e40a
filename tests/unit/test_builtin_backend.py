"""The built-in backend behind the Backend port, and choosing a backend by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.cache import CachePolicy
from comfyserve.engine.registry import build_registry
from comfyserve.worker.backend import BackendJob
from comfyserve.worker.backend_factory import UnknownBackend, build_backend
from comfyserve.worker.builtin_backend import BuiltinBackend

PACKS = ("comfyserve.nodes.primitives", "comfyserve.nodes.image", "comfyserve.nodes.image_io")


def test_an_unknown_backend_name_is_a_clear_error() -> None:
    with pytest.raises(UnknownBackend, match=r"unknown backend 'gpu': choose one of builtin, comfyui"):
        build_backend("gpu")


def test_builtin_runs_a_job_into_its_folder_and_lists_its_files(tmp_path: Path) -> None:
    backend = build_backend("builtin", node_packs=PACKS)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "sub/x"}},
    }
    events: list[str] = []
    try:
        result = backend.run(BackendJob("job1", prompt, tmp_path, on_event=lambda event, _: events.append(event)))
        again = backend.run(BackendJob("job2", prompt, tmp_path / "2"))
    finally:
        backend.close()

    assert result.status == "success" and result.error is None
    assert [(o.node_id, o.relative_name) for o in result.outputs] == [("2", "sub/x_00001_.png")]
    assert result.outputs[0].path == tmp_path / "out" / "sub" / "x_00001_.png" and result.outputs[0].path.is_file()
    assert set(result.per_node_s) == {"1", "2"} and result.executed == ["1", "2"]
    assert "executing" in events
    # warm across jobs: the output node is replayed from the cache into the second job's own folder
    assert again.cached == ["1", "2"] and again.executed == []
    assert [(o.node_id, o.relative_name) for o in again.outputs] == [("2", "sub/x_00001_.png")]
    assert again.outputs[0].path == tmp_path / "2" / "out" / "sub" / "x_00001_.png" and again.outputs[0].path.is_file()


@pytest.mark.parametrize(("cache", "cached"), [(CachePolicy(none=True), []), (CachePolicy(lru=1), ["2"])])
def test_comfyuis_cache_options_bound_the_builtin_cache(tmp_path: Path, cache: CachePolicy, cached: list[str]) -> None:
    """--cache-none keeps nothing; --cache-lru 1 keeps one node result (the last one stored: the output node)."""
    backend = build_backend("builtin", node_packs=PACKS, cache=cache)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    try:
        backend.run(BackendJob("job1", prompt, tmp_path))
        again = backend.run(BackendJob("job2", prompt, tmp_path / "2"))
    finally:
        backend.close()
    assert again.status == "success" and again.cached == cached
    assert [o.relative_name for o in again.outputs] == ["x_00001_.png"]


class ShowText:
    """A custom node with a text UI output, as ComfyUI's PreviewAny."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True

    def show(self, image: Any) -> dict[str, Any]:
        return {"ui": {"text": [f"{tuple(image.shape)}"]}}


def test_builtin_returns_non_file_ui_outputs(tmp_path: Path) -> None:
    registry = build_registry(PACKS)
    registry.register_mappings({"ShowText": ShowText}, module="custom_nodes.show", builtin=False)
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ShowText", "inputs": {"image": ["1", 0]}},
    }
    result = BuiltinBackend(registry).run(BackendJob("job1", prompt, tmp_path))
    assert result.status == "success", result.error
    assert result.ui == {"2": {"text": ["(1, 4, 8, 3)"]}} and result.outputs == []


def test_cache_options_are_checked() -> None:
    assert CachePolicy().comfyui_args() == () and CachePolicy().max_entries == 512
    assert CachePolicy(lru=3).comfyui_args() == ("--cache-lru", "3") and CachePolicy(lru=3).max_entries == 3
    assert CachePolicy(none=True).comfyui_args() == ("--cache-none",) and CachePolicy(none=True).max_entries == 0
    with pytest.raises(ValueError, match="--cache-lru needs a number of node results of at least 1, got 0"):
        CachePolicy(lru=0)
    with pytest.raises(ValueError, match="--cache-lru and --cache-none exclude each other"):
        CachePolicy(lru=2, none=True)


def test_builtin_refuses_an_invalid_workflow_with_the_validation_error(tmp_path: Path) -> None:
    backend = BuiltinBackend(build_registry(PACKS))
    result = backend.run(BackendJob("job1", {"1": {"class_type": "NoSuchNode", "inputs": {}}}, tmp_path))
    assert result.status == "error" and result.outputs == []
    assert result.error is not None and result.error.type == "invalid_prompt" and "NoSuchNode" in result.error.message
    assert not (tmp_path / "out").exists()


def test_builtin_object_info_is_its_registry_catalog() -> None:
    info = BuiltinBackend(build_registry(PACKS)).object_info()
    assert "SaveImage" in info and info["EmptyImage"]["output"] == ["IMAGE"]
    assert "KSampler" not in info
