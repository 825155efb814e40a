"""comfyserve: run ComfyUI API-format workflows as a service."""

__version__ = "0.1.0"
