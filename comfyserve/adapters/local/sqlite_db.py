"""SQLite connection shared by the local queue and job store: WAL, a busy timeout, explicit write transactions.

Several processes may open the same file. Every write runs in ``BEGIN IMMEDIATE`` so the write lock is taken
up front (no lock upgrade deadlocks); readers never block writers under WAL. ``synchronous=NORMAL``: a commit
survives a process crash or restart; only a power loss may drop the last few commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BUSY_TIMEOUT_MS = 30_000


class SqliteDb:
    """One connection per instance, guarded by a lock so that threads of one process can share it."""

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._lock = threading.Lock()
        with self.write() as conn:
            for statement in _statements(schema):
                conn.execute(statement)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success and rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def write_one(self, sql: str, params: Sequence[Any]) -> int:
        """One statement, atomic on its own (no ``BEGIN``/``COMMIT`` round trips); the rows it changed."""
        with self._lock:
            return self._conn.execute(sql, params).rowcount

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(schema: str) -> list[str]:
    return [statement.strip() for statement in schema.split(";") if statement.strip()]
