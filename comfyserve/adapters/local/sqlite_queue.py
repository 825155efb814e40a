"""JobQueue on SQLite with SQS's semantics: visibility timeouts, receive counts, a dead-letter queue.

Several named queues share one table; a queue's dead-letter queue is another name in the same file. A message
is visible when ``visible_at <= now``; receiving it stamps a fresh receipt and hides it until
``now + visibility``. As in SQS, a message already received ``max_receives`` times moves to the dead-letter
queue on the next receive attempt instead of being delivered again.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

from comfyserve.adapters.local.sqlite_db import SqliteDb
from comfyserve.adapters.queue_limits import check_receive_args, check_visibility
from comfyserve.contracts.jobs import QueueMessage
from comfyserve.ports import QueueDepth, ReceiptInvalid, ReceivedMessage

# queue_messages_visible answers "is anything visible?" at once however many messages are in flight;
# queue_messages_order lets receive walk a queue oldest first, reading visible_at from the index, so that it
# never sorts the backlog (only in-flight messages ahead of the first visible one are skipped).
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS queue_messages_order ON queue_messages (queue, seq, visible_at);
"""
RECEIVE_SQL = (
    "SELECT seq, message_id, body, receive_count FROM queue_messages"
    " WHERE queue = ? AND visible_at <= ? AND seq > ? ORDER BY seq LIMIT ?"
)

POLL_INTERVAL_S = 0.05


class SqliteJobQueue:
    def __init__(
        self,
        path: Path,
        name: str = "jobs",
        *,
        max_receives: int | None = 3,
        dead_letter_name: str | None = None,
        db: SqliteDb | None = None,
    ) -> None:
        """``max_receives=None`` disables dead-lettering (the dead-letter queue itself is built that way)."""
        if max_receives is not None and max_receives < 1:
            raise ValueError("max_receives must be at least 1")
        self._db = db or SqliteDb(path, SCHEMA)
        self.name = name
        self._max_receives = max_receives
        self._dead_letters: SqliteJobQueue | None = None
        if max_receives is not None:
            self._dead_letters = SqliteJobQueue(path, dead_letter_name or f"{name}-dlq", max_receives=None, db=self._db)

    @property
    def dead_letters(self) -> SqliteJobQueue | None:
        return self._dead_letters

    def send(self, message: QueueMessage) -> str:
        message_id = uuid.uuid4().hex
        now = time.time()
        self._db.write_one(
            "INSERT INTO queue_messages (queue, message_id, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?)",
            (self.name, message_id, message.model_dump_json(), now, now),
        )
        return message_id

    def receive(self, max_messages: int = 1, visibility_timeout_s: int = 30, wait_s: int = 0) -> list[ReceivedMessage]:
        check_receive_args(max_messages, visibility_timeout_s, wait_s)
        deadline = time.monotonic() + wait_s
        while True:
            received = self._receive_once(max_messages, visibility_timeout_s)
            if received or time.monotonic() >= deadline:
                return received
            time.sleep(min(POLL_INTERVAL_S, max(deadline - time.monotonic(), 0)))

    def _receive_once(self, max_messages: int, visibility_timeout_s: int) -> list[ReceivedMessage]:
        with self._db.read() as conn:
            # Polling an empty queue takes no write lock, so idle workers do not slow down senders.
            visible = "SELECT 1 FROM queue_messages WHERE queue = ? AND visible_at <= ? LIMIT 1"
            if conn.execute(visible, (self.name, time.time())).fetchone() is None:
                return []
        received: list[ReceivedMessage] = []
        last_seq = 0  # a message made visible again by a 0 s timeout must not come twice in one batch
        with self._db.write() as conn:
            now = time.time()
            while len(received) < max_messages:
                rows = conn.execute(RECEIVE_SQL, (self.name, now, last_seq, max_messages - len(received))).fetchall()
                if not rows:
                    break
                last_seq = rows[-1][0]
                for seq, message_id, body, receive_count in rows:
                    limit = self._max_receives
                    if self._dead_letters is not None and limit is not None and receive_count >= limit:
                        conn.execute(
                            "UPDATE queue_messages SET queue = ?, receipt = NULL, visible_at = ? WHERE seq = ?",
                            (self._dead_letters.name, now, seq),
                        )
                        continue
                    receipt = secrets.token_urlsafe(24)
                    conn.execute(
                        "UPDATE queue_messages SET receive_count = receive_count + 1, receipt = ?, visible_at = ?"
                        " WHERE seq = ?",
                        (receipt, now + visibility_timeout_s, seq),
                    )
                    received.append(ReceivedMessage(body, receipt, receive_count + 1, message_id))
        return received

    def extend_visibility(self, receipt: str, seconds: int) -> None:
        check_visibility(seconds)
        with self._db.write() as conn:
            updated = conn.execute(
                "UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?",
                (time.time() + seconds, self.name, receipt),
            ).rowcount
        if updated == 0:
            raise ReceiptInvalid(receipt)

    def delete(self, receipt: str) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM queue_messages WHERE queue = ? AND receipt = ?", (self.name, receipt))

    def release(self, receipt: str) -> None:
        self.extend_visibility(receipt, 0)

    def approximate_depth(self) -> QueueDepth:
        with self._db.read() as conn:
            visible, in_flight = conn.execute(
                "SELECT COALESCE(SUM(visible_at <= ?1), 0), COALESCE(SUM(visible_at > ?1), 0)"
                " FROM queue_messages WHERE queue = ?2",
                (time.time(), self.name),
            ).fetchone()
        return QueueDepth(visible=int(visible), in_flight=int(in_flight))

    def close(self) -> None:
        self._db.close()
