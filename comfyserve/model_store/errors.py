"""Errors of the model store; each message names the model ("<folder>/<name>") and what went wrong."""

from __future__ import annotations

from comfyserve.engine.errors import ComfyServeError


class ModelStoreError(ComfyServeError):
    """A model could not be made local: missing from the bucket, corrupt, or the inventory is unavailable."""


class InventoryNotPublished(ModelStoreError):
    """The models bucket has no published inventory yet (``comfyserve models sync`` writes it)."""


class ModelVerifyError(ModelStoreError):
    """A copy of a model does not match the size or checksum the inventory records; it was discarded."""


class LockTimeout(ModelStoreError):
    """Another worker held a model's copy lock, and kept it alive, for longer than we were willing to wait."""
