"""Exceptions raised by the engine and by nodes; each carries the context needed to explain it."""

from __future__ import annotations


class ComfyServeError(Exception):
    """Base class for errors that are reported to users as one clear sentence."""


class NodeInputError(ComfyServeError):
    """A node received an input it cannot use (raised from inside node code)."""


class InterruptedError_(ComfyServeError):
    """The job was cancelled; raised between nodes or from a progress hook inside a node."""


class WorkflowFormatError(ComfyServeError):
    """The document is not an API-format workflow at all (not JSON, not an object of nodes)."""


class CatalogError(ComfyServeError):
    """A catalog document is malformed."""
