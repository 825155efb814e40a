"""Choosing the execution backend by name (``COMFYSERVE_BACKEND``)."""

from __future__ import annotations

from typing import Any

from comfyserve.worker.backend import Backend

BACKENDS = ("builtin", "comfyui")


class UnknownBackend(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
        self.name = name


def build_backend(name: str, **options: Any) -> Backend:
    """The backend called ``name``, built with ``options`` (its constructor's keyword arguments); not started."""
    if name == "builtin":
        from comfyserve.worker.builtin_backend import BuiltinBackend

        return BuiltinBackend(**options)
    if name == "comfyui":
        from comfyserve.worker.comfyui import ComfyUIBackend, ComfyUIConfig

        return ComfyUIBackend(ComfyUIConfig(**options))
    raise UnknownBackend(name)
