"""``comfy.comfy_types``: type names and base classes for node authors."""

from comfyserve.compat.comfy.comfy_types.node_typing import IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict

__all__ = ["IO", "CheckLazyMixin", "ComfyNodeABC", "FileLocator", "InputTypeDict"]
