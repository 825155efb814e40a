"""A node pack written for ComfyUI: it imports comfy.*, comfy_execution, comfy_api, folder_paths and server."""

from .classic import CLASSIC_NODES
from .v3 import comfy_entrypoint  # noqa: F401

NODE_CLASS_MAPPINGS = CLASSIC_NODES
NODE_DISPLAY_NAME_MAPPINGS = {"PackCountdown": "Pack Countdown"}
