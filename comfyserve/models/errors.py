"""Errors about model files: each message is one sentence that names the file and what is wrong with it."""

from __future__ import annotations

from comfyserve.engine.errors import ComfyServeError


class ModelFileError(ComfyServeError):
    """A model file cannot be read, is not of a supported family, or does not fit the model it is applied to."""
