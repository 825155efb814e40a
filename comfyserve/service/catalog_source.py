"""The catalog the fleet really serves: published by the workers as one object in the blob store, read by the API.

A worker exports its backend's catalog (``Backend.object_info()``) at start and publishes it under
``COMFYSERVE_CATALOG_KEY`` (default ``catalog/object_info.json``; locally the data folder's blob store, in the
cloud the jobs bucket). The object's ETag is its version. The API validates against the published catalog
when there is one and against its fallback (a catalog built with the image, else the packaged one) before any
worker has published; it looks for a new version at most every ``refresh_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.spec import NodeSpec
from comfyserve.ports import BlobInfo, BlobStore

log = logging.getLogger(__name__)

DEFAULT_CATALOG_KEY = "catalog/object_info.json"


def publish_catalog(blobs: BlobStore, object_info: Mapping[str, Any], key: str = DEFAULT_CATALOG_KEY) -> BlobInfo:
    """Publish a catalog document (``/object_info`` shape); the same content always gets the same ETag."""
    Catalog.from_object_info(dict(object_info))  # never publish what the API could not read
    data = json.dumps(object_info, separators=(",", ":")).encode()  # ComfyUI's order is part of what it serves
    return blobs.put(key, data, "application/json")


class PublishedCatalog(Catalog):
    """A :class:`Catalog` that follows the published object (``fallback`` until there is one).

    With ``awaited`` (a ComfyUI fleet, whose catalog is ComfyUI's, not the fallback's), the catalog is
    :attr:`starting` until the first one is published: a workflow the fallback refuses may well be valid then."""

    def __init__(
        self,
        blobs: BlobStore,
        fallback: Catalog,
        *,
        key: str = DEFAULT_CATALOG_KEY,
        refresh_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        awaited: bool = False,
    ) -> None:
        self._blobs = blobs
        self._fallback = fallback
        self._awaited = awaited
        self._key = key
        self._refresh_s = refresh_s
        self._clock = clock
        self._checked_at: float | None = None
        self._version: str | None = None
        self._lock = threading.Lock()
        super().__init__(fallback.specs, fallback.node_classes, fallback.document)

    @property
    def version(self) -> str | None:
        """The ETag of the published catalog in use, ``None`` while on the fallback."""
        self._refresh()
        return self._version

    @property
    def starting(self) -> bool:
        return self._awaited and self.version is None

    @property
    def specs(self) -> dict[str, NodeSpec]:
        self._refresh()
        return self._specs

    @specs.setter
    def specs(self, value: dict[str, NodeSpec]) -> None:
        self._specs = value

    def _refresh(self) -> None:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._refresh_s:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is refreshing; this one goes on with the current catalog
        try:
            self._checked_at = now
            self._load()
        finally:
            self._lock.release()

    def _load(self) -> None:
        try:
            info = self._blobs.head(self._key)
            if info is None:
                if self._version is not None:
                    self._use(self._fallback, None)
                return
            if info.etag == self._version:
                return
            catalog = Catalog.from_object_info(json.loads(self._blobs.get(self._key)))
        except Exception:  # a storage or document failure must never fail the request that asked
            log.warning("cannot read the published catalog %s; keeping the current one", self._key, exc_info=True)
            return
        self._use(catalog, info.etag)
        log.info("using the published catalog %s (version %s, %d node classes)", self._key, info.etag, len(catalog))

    def _use(self, catalog: Catalog, version: str | None) -> None:
        self._specs = catalog.specs
        self.node_classes = catalog.node_classes
        self.document = catalog.document
        self._version = version
