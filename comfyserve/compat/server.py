"""``server``: ``PromptServer.instance`` for packs that send their own websocket messages."""

from __future__ import annotations

from typing import Any

from comfyserve.engine import context


class _Routes:
    """Packs register HTTP routes at import time; comfyserve serves only its own API, so they are ignored."""

    def _ignore(self, *_args: Any, **_kwargs: Any) -> Any:
        return lambda handler: handler

    get = post = put = patch = delete = route = _ignore


class PromptServer:
    """``send_sync(event, data)`` goes into the running job's event stream (its websocket client sees it);
    outside a job it is dropped."""

    instance: PromptServer

    def __init__(self) -> None:
        self.routes = _Routes()
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.supports = ["custom_nodes_from_web"]

    def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        ctx = context.active()
        if ctx is not None and ctx.event_sink is not None:
            ctx.event_sink(event, data)

    async def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    def add_on_prompt_handler(self, handler: Any) -> None:
        """Accepted for compatibility; prompts are not rewritten by packs here."""


PromptServer.instance = PromptServer()
