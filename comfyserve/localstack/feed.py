"""The per-prompt event feed between worker processes and the local server's websocket.

Workers append ComfyUI's fine-grained messages (``executing``, ``progress``, ``executed`` …) for jobs that
were submitted with a ComfyUI ``client_id``; the server tails the table and forwards each row to that
client's socket. SQLite (WAL) because several processes write and one reads; rows older than
:data:`RETENTION_S` are pruned by the reader.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyserve.adapters.local.sqlite_db import SqliteDb

RETENTION_S = 600.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    client_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class FeedEntry:
    seq: int
    tenant: str
    client_id: str
    prompt_id: str
    type: str
    data: dict[str, Any]


class EventFeed:
    def __init__(self, path: Path) -> None:
        self._db = SqliteDb(path, SCHEMA)

    def append(self, tenant: str, client_id: str, prompt_id: str, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Append messages for one prompt in one transaction, in order."""
        now = time.time()
        rows = [(tenant, client_id, prompt_id, kind, json.dumps(data, default=str), now) for kind, data in messages]
        with self._db.write() as conn:
            conn.executemany(
                "INSERT INTO feed (tenant, client_id, prompt_id, type, data, created) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def after(self, seq: int, limit: int = 1000) -> list[FeedEntry]:
        """Rows with a sequence number above ``seq``, oldest first."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT seq, tenant, client_id, prompt_id, type, data FROM feed WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [FeedEntry(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) for row in rows]

    def last_seq(self) -> int:
        with self._db.read() as conn:
            (seq,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM feed").fetchone()
        return int(seq)

    def prune(self, older_than_s: float = RETENTION_S) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM feed WHERE created < ?", (time.time() - older_than_s,))

    def close(self) -> None:
        self._db.close()
