"""ComfyUI's websocket on the local server: clients by (tenant, client id), fed from the worker event feed.

One thread tails the feed and hands each row to its client's outbox; each connection has its own writer
thread, so a slow client never holds up the others. As in ComfyUI, reusing a client id replaces the old
socket, and a message for a client that is not connected is dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from comfyserve.localstack.feed import EventFeed, FeedEntry
from comfyserve.localstack.prompt_messages import STATUS
from comfyserve.localstack.websocket import CloseCode, Opcode, WebSocket
from comfyserve.service.comfyui_info import FEATURE_FLAGS

log = logging.getLogger(__name__)

POLL_S = 0.02
PRUNE_EVERY_S = 60.0
ClientKey = tuple[str, str]


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, default=str)


class _Client:
    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.outbox: queue.Queue[str | None] = queue.Queue()
        self.writer = threading.Thread(target=self._write, name="ws-writer", daemon=True)

    def _write(self) -> None:
        while (text := self.outbox.get()) is not None:
            try:
                self.ws.send_text(text)
            except OSError:
                return

    def stop(self) -> None:
        self.outbox.put(None)


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
            client.stop()
            client.ws.close(CloseCode.GOING_AWAY, "server shutting down")

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

    def serve(self, ws: WebSocket, tenant: str, client_id: str) -> None:
        """Run one connection until it closes (called on the request's thread after the handshake)."""
        key = (tenant, client_id)
        client = _Client(ws)
        client.writer.start()
        client.outbox.put(message(STATUS, self._status(tenant, sid=client_id)))
        with self._lock:
            previous = self._clients.get(key)
            self._clients[key] = client
        if previous is not None:
            previous.stop()
            previous.ws.close(CloseCode.GOING_AWAY, "replaced by a new connection with the same clientId")
        first = True
        try:
            while (received := ws.receive()) is not None:
                opcode, payload = received
                if first and opcode is Opcode.TEXT:
                    self._answer_first(client, payload)
                first = False
        finally:
            with self._lock:
                if self._clients.get(key) is client:
                    del self._clients[key]
            client.stop()
            client.writer.join(timeout=5)

    @staticmethod
    def _answer_first(client: _Client, payload: bytes) -> None:
        """ComfyUI answers a first ``feature_flags`` message with the server's own flags."""
        try:
            kind = json.loads(payload).get("type")
        except (ValueError, AttributeError):
            return
        if kind == "feature_flags":
            client.outbox.put(message("feature_flags", FEATURE_FLAGS))

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
        client.outbox.put(message(entry.type, data))
