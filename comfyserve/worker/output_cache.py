"""The executor's output cache as the worker uses it across jobs."""

from __future__ import annotations

from typing import Any

from comfyserve.engine.cache import OutputCache


class JobOutputCache(OutputCache):
    """The output cache without the entries of nodes that write files (their UI lists images).

    ComfyUI serves a repeated output node from the cache because its files are still in the one shared output
    folder. Here every job has its own folder and must publish its own files, so output nodes always run;
    everything upstream of them (models, latents, decoded images) is still cached across jobs.
    """

    def put(self, key: str, outputs: list[list[Any]], ui: dict[str, Any] | None) -> bool:
        if ui:
            return False
        return super().put(key, outputs, ui)
