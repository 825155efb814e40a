"""ComfyUI's websocket on the local server: clients by (tenant, client id), fed from the worker event feed.

One thread tails the feed and hands each row to its client's outbox on the server's event loop; each
connection is two coroutines (reading, writing), no thread of its own, so a slow client never holds up the
others. A client whose outbox fills (it does not read) is closed. As in ComfyUI, reusing a client id replaces
the old socket, and a message for a client that is not connected is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from comfyserve.localstack.feed import EventFeed, FeedEntry
from comfyserve.localstack.prompt_messages import STATUS
from comfyserve.service.comfyui_info import FEATURE_FLAGS

log = logging.getLogger(__name__)

POLL_S = 0.02
PRUNE_EVERY_S = 60.0
OUTBOX = 4096  # messages waiting for one client (a job sends a few per step)
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
ClientKey = tuple[str, str]


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, default=str)


class AsgiSocket:
    """An accepted ASGI websocket: text in, text out, close."""

    def __init__(
        self, receive: Callable[[], Awaitable[dict[str, Any]]], send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        self._receive = receive
        self._send = send

    async def receive(self) -> str | bytes | None:
        """The next message; ``None`` once the connection is closed."""
        event = await self._receive()
        if event["type"] != "websocket.receive":
            return None
        text: str | None = event.get("text")
        return text if text is not None else event.get("bytes") or b""

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class _Client:
    def __init__(self, socket: AsgiSocket, loop: asyncio.AbstractEventLoop) -> None:
        self.socket = socket
        self.loop = loop
        self.outbox: asyncio.Queue[str | _Close] = asyncio.Queue(OUTBOX)

    def put(self, item: str | _Close) -> None:
        """On the loop: queue a message; a client that does not read is closed instead."""
        try:
            self.outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.outbox = asyncio.Queue(1)
            self.outbox.put_nowait(_Close(POLICY_VIOLATION, "the client does not read its messages"))

    def post(self, item: str | _Close) -> None:
        """From any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
            self.loop.call_soon_threadsafe(self.put, item)

    async def write(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, _Close):
                await self.socket.close(item.code, item.reason)
                return
            try:
                await self.socket.send_text(item)
            except (OSError, RuntimeError):
                return


class WebsocketHub:
    def __init__(self, feed: EventFeed, queue_remaining: Callable[[str], int], poll_s: float = POLL_S) -> None:
        self._feed = feed
        self._queue_remaining = queue_remaining
        self._poll_s = poll_s
        self._clients: dict[ClientKey, _Client] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cursor = feed.last_seq()
        self._tailer = threading.Thread(target=self._tail, name="ws-feed-tail", daemon=True)

    def start(self) -> None:
        self._tailer.start()

    def stop(self) -> None:
        self._stop.set()
        if self._tailer.is_alive():
            self._tailer.join()
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.post(_Close(GOING_AWAY, "server shutting down"))

    def _status(self, tenant: str, sid: str | None = None) -> dict[str, Any]:
        try:
            remaining = self._queue_remaining(tenant)
        except Exception:  # the queue is only read for a display figure
            log.warning("queue depth unavailable", exc_info=True)
            remaining = 0
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
        if sid is not None:
            data["sid"] = sid
        return data

    async def serve(self, socket: AsgiSocket, tenant: str, client_id: str) -> None:
        """Run one accepted connection until it closes."""
        loop = asyncio.get_running_loop()
        key = (tenant, client_id)
        client = _Client(socket, loop)
        status = await loop.run_in_executor(None, self._status, tenant, client_id)
        client.put(message(STATUS, status))
        with self._lock:
            previous = self._clients.get(key)
            self._clients[key] = client
        if previous is not None:
            previous.post(_Close(GOING_AWAY, "replaced by a new connection with the same clientId"))
        writer = asyncio.create_task(client.write())
        first = True
        try:
            while (received := await socket.receive()) is not None:
                if first and isinstance(received, str):
                    self._answer_first(client, received)
                first = False
        finally:
            with self._lock:
                if self._clients.get(key) is client:
                    del self._clients[key]
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    @staticmethod
    def _answer_first(client: _Client, payload: str) -> None:
        """ComfyUI answers a first ``feature_flags`` message with the server's own flags."""
        try:
            kind = json.loads(payload).get("type")
        except (ValueError, AttributeError):
            return
        if kind == "feature_flags":
            client.put(message("feature_flags", FEATURE_FLAGS))

    def _tail(self) -> None:
        next_prune = time.monotonic() + PRUNE_EVERY_S
        while not self._stop.wait(self._poll_s):
            try:
                entries = self._feed.after(self._cursor)
                if time.monotonic() > next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    self._feed.prune()
            except Exception:  # keep tailing through a transient database error
                log.warning("reading the event feed failed", exc_info=True)
                continue
            for entry in entries:
                self._cursor = entry.seq
                self._deliver(entry)

    def _deliver(self, entry: FeedEntry) -> None:
        with self._lock:
            client = self._clients.get((entry.tenant, entry.client_id))
        if client is None:
            return
        data = self._status(entry.tenant) if entry.type == STATUS else entry.data
        client.post(message(entry.type, data))
