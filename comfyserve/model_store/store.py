"""The inventory port: what models exist (``listing``) and where a model's file is on local disk
(``resolve``), with two implementations: a plain models directory here, the S3 → EFS → NVMe tiers in
:mod:`comfyserve.model_store.tiered`.

Loaders reach a store through the run context's :class:`ModelInventory`: :class:`StoreInventory` is one, and
:func:`resolve` resolves through it (or, for a plain inventory, finds the file in its folder).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from comfyserve.engine.inventory import ModelInventory
from comfyserve.model_store.published import ListedInventory
from comfyserve.model_store.tiers import Resolved, Tier


class ModelStore(Protocol):
    def listing(self) -> Mapping[str, list[str]]:
        """Folder → model names (may be cached; the same object while nothing changed)."""
        ...

    def resolve(self, folder: str, name: str) -> AbstractContextManager[Resolved]:
        """``with store.resolve(folder, name) as found:`` — ``found.path`` is complete and stays in place
        inside the block. Raises FileNotFoundError for an unknown model, ModelStoreError when it cannot be
        made local."""
        ...

    def invalidate(self, folder: str, name: str) -> None:
        """The file ``resolve`` gave could not be read: drop local copies so the next resolve fetches anew."""
        ...

    def refresh(self) -> bool:
        """Look for new models now (rate-limited); True when the listing changed."""
        ...


class LocalModelStore:
    """A models directory (``<root>/<folder>/<name>``), rescanned when a scan is older than ``ttl_s`` or on a
    :meth:`refresh` (a name it lacks), at most every ``min_refresh_s``."""

    def __init__(
        self, root: Path, *, ttl_s: float = 5.0, min_refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root, self.ttl_s, self.min_refresh_s = root, ttl_s, min_refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._scan: ModelInventory | None = None
        self._scanned_at = 0.0

    def _inventory(self) -> ModelInventory:
        with self._lock:
            now = self._clock()
            if self._scan is None or now - self._scanned_at >= self.ttl_s:
                self._scan, self._scanned_at = ModelInventory.scan(self.root), now
            return self._scan

    def listing(self) -> Mapping[str, list[str]]:
        return self._inventory().files

    @contextlib.contextmanager
    def resolve(self, folder: str, name: str) -> Iterator[Resolved]:
        yield Resolved(self._inventory().path(folder, name), Tier.LOCAL)

    def invalidate(self, folder: str, name: str) -> None:
        """Nothing to drop: the directory is the only copy."""

    def refresh(self) -> bool:
        with self._lock:
            if self._scan is not None and self._clock() - self._scanned_at < self.min_refresh_s:
                return False
            before = self._scan.files if self._scan is not None else None
            self._scan, self._scanned_at = ModelInventory.scan(self.root), self._clock()
            return self._scan.files != before


class StoreInventory(ListedInventory):
    """The run context's inventory over a :class:`ModelStore`: names from its listing, files through it."""

    def __init__(self, store: ModelStore) -> None:
        super().__init__(store.listing, store.refresh)
        self.store = store

    def path(self, folder: str, name: str) -> Path:
        with self.store.resolve(folder, name) as found:
            return found.path


def resolve(inventory: ModelInventory, folder: str, name: str) -> AbstractContextManager[Resolved]:
    """Resolve a model through ``inventory``: its store's tiers, or a plain inventory's folder (tier local)."""
    if isinstance(inventory, StoreInventory):
        return inventory.store.resolve(folder, name)
    return contextlib.nullcontext(Resolved(inventory.path(folder, name), Tier.LOCAL))


def invalidate(inventory: ModelInventory, folder: str, name: str) -> None:
    if isinstance(inventory, StoreInventory):
        inventory.store.invalidate(folder, name)
