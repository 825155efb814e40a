"""The job service's settings: :class:`ServiceSettings`, one member of the settings contract in
``comfyserve.settings`` (every field from ``COMFYSERVE_<FIELD NAME IN CAPITALS>``; ``ServiceSettings.from_env()``
reads them all)."""

from __future__ import annotations

from comfyserve.settings import ENV_PREFIX, AuthMode, MiB, ServiceSettings

__all__ = ["ENV_PREFIX", "AuthMode", "MiB", "ServiceSettings"]
