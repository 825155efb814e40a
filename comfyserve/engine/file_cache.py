"""An output cache for processes that give every job its own folders (the workers).

ComfyUI serves a repeated output node from its cache because the node's files are still in the one shared
output folder. When each job has folders of its own, a cached output node must bring its files along: this
cache keeps the bytes of the files a node's UI lists (``{"filename", "subfolder", "type"}`` items) with its
entry and writes them into the running job's output or temp folder when the entry is served, so the node is
reported as cached, as in ComfyUI, and its files are still the job's. A node whose files are larger than
``max_file_bytes``, or whose files are gone, is not kept (it runs again).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from comfyserve.engine import context
from comfyserve.engine.cache import GIB, CacheEntry, OutputCache

K = TypeVar("K")
FILES = "\x00files"  # the UI key the file bytes are kept under inside the cache; never served
MIB = 1024**2


def _listed_files(ui: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for items in ui.values():
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                yield item


def _folder(ctx: context.RunContext, item: Mapping[str, Any]) -> Path:
    root = ctx.temp_dir if item.get("type") == "temp" else ctx.output_dir
    subfolder = str(item.get("subfolder") or "")
    return root / subfolder if subfolder else root


class FileReplayCache(OutputCache):
    def __init__(self, max_entries: int = 512, max_bytes: int = 8 * GIB, max_file_bytes: int = 64 * MIB) -> None:
        super().__init__(max_entries, max_bytes)
        self.max_file_bytes = max_file_bytes

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> bool:
        ctx = context.active()
        items = list(_listed_files(ui)) if ui else []
        if not items:
            return super().put(key, outputs, ui)
        if ctx is None:
            return False
        files = []
        total = 0
        for item in items:
            path = _folder(ctx, item) / item["filename"]
            try:
                size = path.stat().st_size
                total += size
                if total > self.max_file_bytes:
                    return False
                files.append((item.get("type"), str(item.get("subfolder") or ""), item["filename"], path.read_bytes()))
            except OSError:
                return False
        return super().put(key, outputs, {**(ui or {}), FILES: files})

    def get(self, key: str) -> CacheEntry | None:
        entry = super().get(key)
        return None if entry is None else self._served(entry)

    def get_many(self, keys: Mapping[K, str | None]) -> dict[K, CacheEntry]:
        found = {}
        for name, entry in super().get_many(keys).items():
            served = self._served(entry)
            if served is not None:
                found[name] = served
        return found

    def _served(self, entry: CacheEntry) -> CacheEntry | None:
        """The entry as the executor sees it, its files written into the running job's folders first; ``None``
        when they cannot be (no job, or a file of that name is already there)."""
        if entry.ui is None or FILES not in entry.ui:
            return entry
        ctx = context.active()
        if ctx is None:
            return None
        files = entry.ui[FILES]
        targets = []
        for folder_type, subfolder, filename, _ in files:
            path = _folder(ctx, {"type": folder_type, "subfolder": subfolder}) / filename
            if path.exists():
                return None
            targets.append(path)
        for path, (_, _, _, data) in zip(targets, files, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return entry._replace(ui={k: v for k, v in entry.ui.items() if k != FILES})
