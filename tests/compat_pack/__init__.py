"""A ``custom_nodes`` folder holding a pack written as for ComfyUI (it imports ComfyUI's module names)."""

from pathlib import Path

CUSTOM_NODES = Path(__file__).resolve().parent
