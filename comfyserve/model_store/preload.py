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


def preload(
    inventory: ModelInventory, models: Sequence[str], *, load: bool = True
) -> tuple[dict[str, float], list[ModelLoad]]:
    """Make each ``"<folder>/<name>"`` local and, with ``load``, load it into memory (checkpoints, VAEs, LoRAs;
    other folders are only made local; without ``load`` nothing heavy is imported: a backend in another process
    loads the files itself). Returns the seconds per tier (``{"s3": 3.2, "nvme": 0.4}``) and the loads.

    Raises ModelStoreError naming the first entry that is malformed, unknown or cannot be loaded."""
    from comfyserve.engine.errors import NodeInputError

    wanted = [split_model(spec) for spec in models]
    with recording() as loads:
        for folder, name in wanted:
            try:
                if not (load and _load(inventory, folder, name)):
                    with resolve(inventory, folder, name) as found:
                        record(ModelLoad(model=f"{folder}/{name}", tier=found.tier, fetch_s=found.seconds, load_s=0))
            except (NodeInputError, FileNotFoundError) as exc:
                raise ModelStoreError(f"preloading {folder}/{name} failed: {exc}") from exc
    return seconds_by_tier(loads), list(loads)


def _load(inventory: ModelInventory, folder: str, name: str) -> bool:
    """Load the model into memory through its folder's loader; False when the folder has none."""
    from comfyserve.nodes.loaders import FILE_LOADERS, load_model

    loader = FILE_LOADERS.get(folder)
    if loader is None:
        return False
    load_model(inventory, folder, name, loader)
    return True
