"""The local adapters of one data directory, opened the same way by the server and by each worker process.

Layout (durable across restarts)::

    data_dir/secrets.json    blob URL and webhook signing keys (created once, mode 0600)
    data_dir/blobs/          LocalBlobStore
    data_dir/jobs.sqlite     SqliteJobStore
    data_dir/queue.sqlite    SqliteJobQueue ("jobs" and its dead-letter queue "jobs-dlq")
    data_dir/events.jsonl    JsonlEventBus; webhook deliveries in data_dir/webhooks.jsonl
    data_dir/feed.sqlite     the websocket event feed
    data_dir/work/           worker scratch folders (one per running job)
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from comfyserve.adapters.local.blobs import BlobUrlSigner, LocalBlobStore
from comfyserve.adapters.local.events import JsonlEventBus
from comfyserve.adapters.local.sqlite_jobs import SqliteJobStore
from comfyserve.adapters.local.sqlite_queue import SqliteJobQueue
from comfyserve.adapters.local.webhooks import WebhookDispatcher
from comfyserve.localstack.feed import EventFeed


@dataclass(frozen=True)
class StackSecrets:
    blob_signing: bytes
    webhook_signing: bytes


def load_secrets(data_dir: Path) -> StackSecrets:
    """The data directory's signing keys, created on first use (so URLs and signatures survive restarts)."""
    path = data_dir / "secrets.json"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        document = {"blob_signing": secrets.token_hex(32), "webhook_signing": secrets.token_hex(32)}
        tmp = path.with_name(f".secrets.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle)
        try:
            os.link(tmp, path)  # first writer wins; a concurrent creator reads the winner's keys
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    document = json.loads(path.read_text())
    return StackSecrets(bytes.fromhex(document["blob_signing"]), bytes.fromhex(document["webhook_signing"]))


@dataclass(frozen=True)
class LocalAdapters:
    blobs: LocalBlobStore
    queue: SqliteJobQueue
    store: SqliteJobStore
    bus: JsonlEventBus
    webhooks: WebhookDispatcher
    feed: EventFeed
    work_dir: Path

    @classmethod
    def open(
        cls, data_dir: Path, base_url: str, *, max_receives: int = 3, allow_private_urls: bool = False
    ) -> LocalAdapters:
        keys = load_secrets(data_dir)
        webhooks = WebhookDispatcher(
            keys.webhook_signing, data_dir / "webhooks.jsonl", allow_private=allow_private_urls
        )
        return cls(
            blobs=LocalBlobStore(data_dir / "blobs", BlobUrlSigner(base_url, keys.blob_signing)),
            queue=SqliteJobQueue(data_dir / "queue.sqlite", "jobs", max_receives=max_receives),
            store=SqliteJobStore(data_dir / "jobs.sqlite"),
            bus=JsonlEventBus(data_dir / "events.jsonl", webhooks),
            webhooks=webhooks,
            feed=EventFeed(data_dir / "feed.sqlite"),
            work_dir=data_dir / "work",
        )

    def close(self) -> None:
        self.webhooks.close()
        self.queue.close()
        self.store.close()
        self.feed.close()
