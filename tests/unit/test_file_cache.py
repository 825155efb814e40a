"""FileReplayCache: a repeated output node is served from the cache with its files, in the new job's folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyserve.engine import context as run_context
from comfyserve.engine.executor import Executor
from comfyserve.engine.file_cache import FileReplayCache
from comfyserve.engine.registry import NodeRegistry
from tests.testpack.harness import context, run


class WriteText:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING",), "preview": ("BOOLEAN",)}}

    RETURN_TYPES = ()
    FUNCTION = "write"
    OUTPUT_NODE = True

    def write(self, text: str, preview: bool) -> dict[str, Any]:
        ctx = run_context.current()
        folder, kind = (ctx.temp_dir, "temp") if preview else (ctx.output_dir / "sub", "output")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "note_00001_.txt").write_text(text)
        return {"ui": {"files": [{"filename": "note_00001_.txt", "subfolder": "" if preview else "sub", "type": kind}]}}


REGISTRY = NodeRegistry()
REGISTRY.register_mappings({"WriteText": WriteText}, module=__name__, builtin=True)


def _prompt(text: str = "hello", preview: bool = False) -> dict[str, Any]:
    return {"1": {"class_type": "WriteText", "inputs": {"text": text, "preview": preview}}}


def test_a_cached_output_node_brings_its_files_into_the_new_jobs_folders(tmp_path: Path) -> None:
    executor = Executor(REGISTRY, cache=FileReplayCache())
    first_ctx, second_ctx = context(tmp_path / "job1"), context(tmp_path / "job2")
    first, _ = run(executor, _prompt(), ["1"], first_ctx)
    second, events = run(executor, _prompt(), ["1"], second_ctx)
    assert first.executed == ["1"] and second.executed == [] and second.cached == ["1"]
    assert events.ran() == set()
    assert second.ui_outputs == first.ui_outputs  # the bytes kept inside the cache are never served
    assert (second_ctx.output_dir / "sub" / "note_00001_.txt").read_text() == "hello"
    preview_ctx = context(tmp_path / "job3")
    run(executor, _prompt(preview=True), ["1"], context(tmp_path / "job0"))
    third, _ = run(executor, _prompt(preview=True), ["1"], preview_ctx)
    assert third.cached == ["1"] and (preview_ctx.temp_dir / "note_00001_.txt").read_text() == "hello"


def test_a_node_whose_files_are_too_large_or_already_there_runs_again(tmp_path: Path) -> None:
    small = Executor(REGISTRY, cache=FileReplayCache(max_file_bytes=3))
    run(small, _prompt(), ["1"], context(tmp_path / "a"))
    again, _ = run(small, _prompt(), ["1"], context(tmp_path / "b"))
    assert again.executed == ["1"]

    executor = Executor(REGISTRY, cache=FileReplayCache())
    run(executor, _prompt(), ["1"], context(tmp_path / "c"))
    taken = context(tmp_path / "d")
    (taken.output_dir / "sub").mkdir(parents=True)
    (taken.output_dir / "sub" / "note_00001_.txt").write_text("someone else's")
    rerun, _ = run(executor, _prompt(), ["1"], taken)
    assert rerun.executed == ["1"] and rerun.cached == []
