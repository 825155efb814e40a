"""Append-only JSON-lines files that several threads and processes may write at once."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any


class JsonLinesFile:
    """Each append writes one whole line under a thread lock and an exclusive ``flock``.

    Like the SQLite files (``synchronous=NORMAL``), a line survives a crash of the writing process once
    ``append`` returns (it is in the kernel); no fsync, so a power loss may drop the last lines.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def append(self, line: str) -> None:
        if "\n" in line:
            raise ValueError("a JSON line must not contain a newline")
        data = (line + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every complete line, parsed; a torn last line (a writer killed mid-write) is skipped."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows
