"""Which files ComfyUI's output and temp folders keep between jobs.

ComfyUI caches an output node like any other: a job whose output node has the same inputs (and upstream) as one
of a recent job gets it from the cache, and its history entry names the files the earlier run wrote. So after
each job the backend remembers, by output node signature (class and inputs, links replaced by the upstream
node's signature, as ComfyUI keys its cache), the files the history named, for the last ``jobs`` jobs (ComfyUI's
classic cache keeps the previous prompt's results: 1; ``--cache-lru N``: N; ``--cache-none``: 0). Before the
next job every file is deleted except those of an output node that job has too: nothing piles up, a node served
from the cache still finds its files, and any other output is numbered as on a fresh ComfyUI
(``ComfyUI_00001_.png``), so a job run again gets the same names.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def signatures(prompt: Mapping[str, Any]) -> dict[str, str]:
    """Each node's cache signature: its class and inputs, a link replaced by the upstream node's signature."""
    found: dict[str, str] = {}

    def of(node_id: str, path: frozenset[str]) -> str:
        if node_id in found:
            return found[node_id]
        node = prompt.get(node_id)
        if node_id in path or not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
            return json.dumps(["?", node_id])  # a cycle or a broken link: ComfyUI refuses the prompt anyway
        inputs = {
            name: [of(str(value[0]), path | {node_id}), value[1]] if _is_link(value) else value
            for name, value in node["inputs"].items()
        }
        found[node_id] = json.dumps([node.get("class_type"), inputs], sort_keys=True, default=str)
        return found[node_id]

    for node_id in prompt:
        of(str(node_id), frozenset())
    return found


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int) and isinstance(value[1], int)


class Retention:
    def __init__(self, folders: Iterable[Path], jobs: int) -> None:
        self.folders = tuple(folders)
        self._jobs: deque[dict[str, frozenset[Path]]] = deque(maxlen=max(jobs, 0))

    def before(self, prompt: Mapping[str, Any]) -> None:
        """Delete every file but those of an earlier output node that ``prompt`` has too."""
        wanted = set(signatures(prompt).values())
        self._prune({path for job in self._jobs for key, paths in job.items() if key in wanted for path in paths})

    def after(self, prompt: Mapping[str, Any], named: Mapping[str, Iterable[Path]]) -> None:
        """Remember the files the job's history ``named`` by node id, under each node's signature; delete the
        files no cache entry can name."""
        keys = signatures(prompt)
        if self._jobs.maxlen:
            self._jobs.append({keys[node]: frozenset(paths) for node, paths in named.items() if node in keys})
        self._prune({path for job in self._jobs for paths in job.values() for path in paths})

    def reset(self) -> None:
        """ComfyUI (re)starts with an empty cache: no file is named any more."""
        self._jobs.clear()
        self._prune(set())

    def _prune(self, kept: set[Path]) -> None:
        for folder in self.folders:
            for path in sorted(folder.rglob("*"), reverse=True):  # files before the folders that hold them
                with contextlib.suppress(OSError):
                    if path.is_dir() and not path.is_symlink():
                        if not any(path.iterdir()):
                            path.rmdir()
                    elif path not in kept:
                        path.unlink()
