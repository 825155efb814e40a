"""The composition of a model store from the settings contract, for the worker, the API and ``comfyserve models``.

The variables are those of :class:`comfyserve.settings.CloudWorkerSettings` (docs/SETTINGS.md);
:class:`ModelStoreSettings` is the slice of it the model store reads, with the very same field definitions,
so a sync task or the API can read it without the worker's required resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import copy
from pathlib import Path
from typing import Annotated, Any

from comfyserve.engine.inventory import ModelInventory
from comfyserve.model_store.errors import InventoryNotPublished
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.published import ListedInventory, PublishedSource
from comfyserve.model_store.store import LocalModelStore, ModelStore, StoreInventory
from comfyserve.model_store.tiered import TieredModelStore
from comfyserve.service.errors import Unavailable
from comfyserve.settings import CloudWorkerSettings, EnvSettings

_WORKER = CloudWorkerSettings.model_fields


class ModelStoreSettings(EnvSettings):
    """``ModelStoreSettings.from_env()``; a ``CloudWorkerSettings`` can be passed wherever this is."""

    models_bucket: Annotated[str | None, copy(_WORKER["models_bucket"])]
    inventory_key: Annotated[str, copy(_WORKER["inventory_key"])]
    model_root: Annotated[Path, copy(_WORKER["model_root"])]
    local_cache_dir: Annotated[Path, copy(_WORKER["local_cache_dir"])]
    local_cache_bytes: Annotated[int, copy(_WORKER["local_cache_bytes"])]
    inventory_ttl_s: Annotated[float, copy(_WORKER["inventory_ttl_s"])]
    model_lock_stale_s: Annotated[float, copy(_WORKER["model_lock_stale_s"])]


Settings = ModelStoreSettings | CloudWorkerSettings


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def model_store(settings: Settings, s3: Any | None = None) -> ModelStore:
    """The worker's store: S3 → EFS → NVMe when a models bucket is set, else the model root as a plain dir."""
    if settings.models_bucket is None:
        return LocalModelStore(settings.model_root)
    s3 = s3 if s3 is not None else s3_client()
    source = PublishedSource(s3, settings.models_bucket, settings.inventory_key, ttl_s=settings.inventory_ttl_s)
    local = LocalCache(settings.local_cache_dir, settings.local_cache_bytes) if settings.local_cache_bytes else None
    return TieredModelStore(
        s3, settings.models_bucket, source, settings.model_root, local, stale_after_s=settings.model_lock_stale_s
    )


def worker_inventory(settings: Settings, s3: Any | None = None) -> StoreInventory:
    """The inventory to put in the worker's run context: loaders resolve files through the tiers."""
    return StoreInventory(model_store(settings, s3))


def api_inventory(settings: Settings, s3: Any | None = None) -> ModelInventory | None:
    """What the API validates model names against: the published inventory (short cache), or ``None`` (any
    name accepted; the worker checks again) when no models bucket is configured. Reads no model file."""
    if settings.models_bucket is None:
        return None
    s3 = s3 if s3 is not None else s3_client()
    source = PublishedSource(s3, settings.models_bucket, settings.inventory_key, ttl_s=settings.inventory_ttl_s)

    def listing() -> Mapping[str, list[str]]:
        """Until an inventory is published, a request that needs it is refused with a 503 (retryable)."""
        try:
            return source.listing()
        except InventoryNotPublished as exc:
            message = "The model inventory is not published yet"
            raise Unavailable(message, details="run `comfyserve models sync`") from exc

    return ListedInventory(listing)
