"""Preloading: the worker's composition root calls :func:`preload` before its first receive, with the
``COMFYSERVE_PRELOAD`` list, and reports the seconds per tier as parts of its cold start."""

from __future__ import annotations

from collections.abc import Sequence

from comfyserve.engine.inventory import ModelInventory
from comfyserve.model_store.errors import ModelStoreError
from comfyserve.model_store.store import resolve
from comfyserve.model_store.tiers import ModelLoad, record, recording, seconds_by_tier


def split_model(spec: str) -> tuple[str, str]:
    """``"checkpoints/sd15.safetensors"`` → ``("checkpoints", "sd15.safetensors")``."""
    folder, _, name = spec.strip().partition("/")
    if not folder or not name:
        raise ModelStoreError(f'preload entry {spec!r} is not "<folder>/<name>"')
    return folder, name


def preload(inventory: ModelInventory, models: Sequence[str]) -> tuple[dict[str, float], list[ModelLoad]]:
    """Make each ``"<folder>/<name>"`` local and load it into memory (checkpoints, VAEs, LoRAs; other folders
    are only made local). Returns the seconds per tier (``{"s3": 3.2, "nvme": 0.4}``) and the loads.

    Raises ModelStoreError naming the first entry that is malformed, unknown or cannot be loaded."""
    from comfyserve.engine.errors import NodeInputError
    from comfyserve.nodes.loaders import FILE_LOADERS, load_model

    wanted = [split_model(spec) for spec in models]
    with recording() as loads:
        for folder, name in wanted:
            try:
                loader = FILE_LOADERS.get(folder)
                if loader is not None:
                    load_model(inventory, folder, name, loader)
                else:
                    with resolve(inventory, folder, name) as found:
                        record(ModelLoad(model=f"{folder}/{name}", tier=found.tier, fetch_s=found.seconds, load_s=0))
            except (NodeInputError, FileNotFoundError) as exc:
                raise ModelStoreError(f"preloading {folder}/{name} failed: {exc}") from exc
    return seconds_by_tier(loads), list(loads)
