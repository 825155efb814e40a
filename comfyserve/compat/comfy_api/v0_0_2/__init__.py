"""``comfy_api.v0_0_2``: ``ComfyAPI().execution.set_progress`` (async) and its ``ComfyAPISync`` twin."""

from __future__ import annotations

from typing import Any

from comfyserve.engine import context

__all__ = ["ComfyAPI", "ComfyAPISync"]


def _set_progress(value: float, max_value: float, node_id: str | None) -> None:
    ctx = context.active()
    if ctx is None:
        raise ValueError("node_id must be provided if not in executing context")
    ctx.progress(value, max_value)  # type: ignore[arg-type]  # ComfyUI's progress is fractional


class _Execution:
    async def set_progress(
        self,
        value: float,
        max_value: float,
        node_id: str | None = None,
        preview_image: Any = None,
        ignore_size_limit: bool = False,
    ) -> None:
        """The running node's progress (``progress`` and ``progress_state`` events); a cancellation point."""
        _set_progress(value, max_value, node_id)


class _ExecutionSync:
    def set_progress(
        self,
        value: float,
        max_value: float,
        node_id: str | None = None,
        preview_image: Any = None,
        ignore_size_limit: bool = False,
    ) -> None:
        _set_progress(value, max_value, node_id)


class ComfyAPI:
    def __init__(self) -> None:
        self.execution = _Execution()


class ComfyAPISync:
    def __init__(self) -> None:
        self.execution = _ExecutionSync()
