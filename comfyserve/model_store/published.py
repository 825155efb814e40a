"""The published model inventory: ONE object in the models bucket, listing every model with its size and
checksum. The API validates model names against it and workers resolve files with it; nobody walks EFS.

``PublishedSource`` reads it with a short cache (one GET per ``ttl_s`` at most; a failed refresh keeps the
copy it has). ``ListedInventory`` presents any listing as the engine's :class:`ModelInventory`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cached_property
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from comfyserve.engine.inventory import ModelInventory, folder_name
from comfyserve.model_store.errors import InventoryNotPublished, ModelStoreError

log = logging.getLogger(__name__)

DEFAULT_INVENTORY_KEY = "inventory.json"
SCHEMA = 1


class ModelEntry(BaseModel):
    """One model file: its name in its folder, bytes, sha256 (hex), the S3 ETag it was hashed from, and its
    key when that is not ``<folder>/<name>`` (a file under one of ComfyUI's folder aliases)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    etag: str | None = None
    key: str | None = None

    @field_validator("name")
    @classmethod
    def _relative(cls, name: str) -> str:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or any(part in ("..", ".") for part in parts):
            raise ValueError(f"model name {name!r} must be a relative path without '..'")
        return name

    def s3_key(self, folder: str) -> str:
        return self.key or f"{folder}/{self.name}"


class PublishedInventory(BaseModel):
    """Folder ("checkpoints", "loras", …) → models. ``version`` is a digest of the listing: equal listings,
    equal versions."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA
    version: str = ""
    published_at: datetime | None = None
    folders: dict[str, list[ModelEntry]] = Field(default_factory=dict)

    @classmethod
    def build(cls, folders: Mapping[str, list[ModelEntry]]) -> PublishedInventory:
        ordered = {f: sorted(entries, key=lambda e: e.name) for f, entries in sorted(folders.items()) if entries}
        document = json.dumps({f: [e.model_dump() for e in es] for f, es in ordered.items()}, sort_keys=True)
        version = hashlib.sha256(document.encode()).hexdigest()[:16]
        return cls(version=version, published_at=datetime.now(UTC), folders=ordered)

    def entry(self, folder: str, name: str) -> ModelEntry | None:
        return next((e for e in self.folders.get(folder_name(folder), ()) if e.name == name), None)

    @cached_property
    def listing(self) -> dict[str, list[str]]:
        """Folder → names (computed once per inventory object; do not mutate)."""
        return {folder: [e.name for e in entries] for folder, entries in self.folders.items()}


def read_inventory(s3: Any, bucket: str, key: str) -> PublishedInventory:
    """The published inventory; a missing or malformed object is a ModelStoreError saying what to run."""
    where = f"s3://{bucket}/{key}"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise InventoryNotPublished(f"no model inventory at {where}: run `comfyserve models sync`") from None
    try:
        return PublishedInventory.model_validate_json(body)
    except ValidationError as exc:
        raise ModelStoreError(f"the model inventory at {where} is malformed: {exc.errors()[0]['msg']}") from exc


def write_inventory(s3: Any, bucket: str, key: str, inventory: PublishedInventory) -> None:
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=inventory.model_dump_json(indent=1).encode(),
        ContentType="application/json",
    )


class PublishedSource:
    """The published inventory, read once and then re-read when it is older than ``ttl_s`` (the API: a short
    cache) or on :meth:`refresh` (the worker, when a name or an ETag it needs is not in its copy). Re-reads
    are at least ``min_refresh_s`` apart; a failed re-read keeps the copy it has. Thread-safe."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        key: str = DEFAULT_INVENTORY_KEY,
        *,
        ttl_s: float = 30.0,
        min_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.ttl_s, self.min_refresh_s = ttl_s, min_refresh_s
        self.reads = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._current: PublishedInventory | None = None
        self._read_at = 0.0

    def get(self) -> PublishedInventory:
        with self._lock:
            if self._current is None or self._clock() - self._read_at >= self.ttl_s:
                self._read()
            assert self._current is not None
            return self._current

    def refresh(self) -> bool:
        """Re-read now unless the last read is younger than ``min_refresh_s``; True when the version changed."""
        with self._lock:
            if self._current is not None and self._clock() - self._read_at < self.min_refresh_s:
                return False
            before = self._current.version if self._current is not None else None
            self._read()
            assert self._current is not None
            return self._current.version != before

    def _read(self) -> None:
        self._read_at = self._clock()
        self.reads += 1
        try:
            self._current = read_inventory(self.s3, self.bucket, self.key)
        except Exception:
            if self._current is None:
                raise
            log.warning(
                "re-reading the model inventory failed; keeping version %s", self._current.version, exc_info=True
            )

    def listing(self) -> Mapping[str, list[str]]:
        return self.get().listing


class ListedInventory(ModelInventory):
    """A :class:`ModelInventory` whose names come from ``listing()`` each time they are asked for (the
    listing caches), so a newly published model is accepted without a restart. A name it does not have calls
    ``refresh()`` (when given; True: there is a new listing) and is looked up once more. No files of its own."""

    def __init__(
        self, listing: Callable[[], Mapping[str, list[str]]], refresh: Callable[[], bool] | None = None
    ) -> None:
        super().__init__()
        self._listing = listing
        self._on_miss = refresh
        self._seen: Mapping[str, list[str]] | None = None

    def _refresh(self) -> None:
        listing = self._listing()
        if listing is not self._seen:
            self.files, self._seen = {folder: sorted(names) for folder, names in listing.items()}, listing

    def names(self, folder: str) -> list[str]:
        self._refresh()
        return super().names(folder)

    def has(self, folder: str, name: str) -> bool:
        self._refresh()
        if super().has(folder, name):
            return True
        if self._on_miss is None or not self._on_miss():
            return False
        self._refresh()
        return super().has(folder, name)
