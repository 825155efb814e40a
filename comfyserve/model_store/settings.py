"""The model store's settings (``COMFYSERVE_*`` variables, the team's one settings contract) and the
composition of a store from them, for the worker, the API and ``comfyserve models``.

======================================  ====================================================================
``COMFYSERVE_MODELS_BUCKET``            S3 models bucket, the source of truth (keys ``<folder>/<name>``)
``COMFYSERVE_INVENTORY_KEY``            key of the published inventory in that bucket (``inventory.json``)
``COMFYSERVE_MODEL_ROOT``               EFS shared root (``/mnt/models``); without a bucket, a plain models dir
``COMFYSERVE_LOCAL_CACHE_DIR``          instance NVMe cache (``/var/cache/comfyserve/models``)
``COMFYSERVE_LOCAL_CACHE_BYTES``        NVMe budget in bytes; 0 (default) reads models from EFS directly
``COMFYSERVE_PRELOAD``                  comma list of ``<folder>/<name>`` loaded before the first receive
``COMFYSERVE_INVENTORY_TTL_S``          how long a read of the inventory is reused (30)
``COMFYSERVE_MODEL_LOCK_STALE_S``       a copy lock without a heartbeat for this long is taken over (30)
======================================  ====================================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfyserve.engine.inventory import ModelInventory
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.published import DEFAULT_INVENTORY_KEY, ListedInventory, PublishedSource
from comfyserve.model_store.store import LocalModelStore, ModelStore, StoreInventory
from comfyserve.model_store.tiered import TieredModelStore


class ModelStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMFYSERVE_", extra="ignore")

    models_bucket: str | None = Field(default=None, description="S3 models bucket (source of truth)")
    inventory_key: str = Field(default=DEFAULT_INVENTORY_KEY, description="key of the published inventory")
    model_root: Path = Field(default=Path("/mnt/models"), description="EFS shared root mount")
    local_cache_dir: Path = Field(default=Path("/var/cache/comfyserve/models"), description="NVMe cache dir")
    local_cache_bytes: int = Field(default=0, ge=0, description="NVMe cache budget in bytes (0: no NVMe tier)")
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description='models loaded before the first receive ("folder/name,...")'
    )
    inventory_ttl_s: float = Field(default=30.0, gt=0, description="seconds a read of the inventory is reused")
    model_lock_stale_s: float = Field(default=30.0, gt=0, description="seconds without heartbeat before takeover")

    @field_validator("preload", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


def s3_client() -> Any:
    import boto3

    return boto3.client("s3")


def model_store(settings: ModelStoreSettings, s3: Any | None = None) -> ModelStore:
    """The worker's store: S3 → EFS → NVMe when a models bucket is set, else the model root as a plain dir."""
    if settings.models_bucket is None:
        return LocalModelStore(settings.model_root)
    s3 = s3 if s3 is not None else s3_client()
    source = PublishedSource(s3, settings.models_bucket, settings.inventory_key, ttl_s=settings.inventory_ttl_s)
    local = LocalCache(settings.local_cache_dir, settings.local_cache_bytes) if settings.local_cache_bytes else None
    return TieredModelStore(
        s3, settings.models_bucket, source, settings.model_root, local, stale_after_s=settings.model_lock_stale_s
    )


def worker_inventory(settings: ModelStoreSettings, s3: Any | None = None) -> StoreInventory:
    """The inventory to put in the worker's run context: loaders resolve files through the tiers."""
    return StoreInventory(model_store(settings, s3))


def api_inventory(settings: ModelStoreSettings, s3: Any | None = None) -> ModelInventory | None:
    """What the API validates model names against: the published inventory (short cache), or ``None`` (any
    name accepted; the worker checks again) when no models bucket is configured. Reads no model file."""
    if settings.models_bucket is None:
        return None
    s3 = s3 if s3 is not None else s3_client()
    source = PublishedSource(s3, settings.models_bucket, settings.inventory_key, ttl_s=settings.inventory_ttl_s)
    return ListedInventory(source.listing)
