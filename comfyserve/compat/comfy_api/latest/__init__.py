"""``comfy_api.latest``: V3 nodes (``io.ComfyNode`` with ``define_schema``) and ``ComfyExtension``."""

from __future__ import annotations

from abc import ABC, abstractmethod

from comfyserve.compat.comfy_api.latest import io
from comfyserve.compat.comfy_api.v0_0_2 import ComfyAPI, ComfyAPISync

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyExtension", "io"]


class ComfyExtension(ABC):
    """What a V3 pack's ``comfy_entrypoint()`` returns: its node classes."""

    async def on_load(self) -> None:  # noqa: B027 — optional hook, as in ComfyUI
        """Called once before :meth:`get_node_list`."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]: ...
