"""A lease lock on a shared file system (the EFS root): an ``O_EXCL`` lock file naming its holder, kept alive
by a heartbeat (its mtime), and taken over when nobody has touched it for ``stale_after_s``.

Why not ``fcntl``/``flock``: on NFS (EFS is NFSv4.1) a byte-range lock lives in the server's lease state; when
an instance vanishes (Spot, a crash) the lock is only reclaimed when that lease expires, invisibly, and a mount
with ``nolock`` or another shared file system may not honour it at all. An exclusive create is atomic on
NFSv4, works the same on a local directory (the tests), shows who holds the lock and since when (``cat``), and
survives every kind of holder death the same way: the heartbeat stops, the lock goes stale, a waiter takes it.

Staleness is judged by the waiter's own monotonic clock: the lock is stale when its content and mtime have not
changed for ``stale_after_s`` while the waiter watched. No two clocks are compared, so clock skew between
instances (or between a client and the NFS server that stamps mtimes) cannot break a live lock. Each look
opens the file, which makes NFS revalidate its cached attributes (close-to-open consistency).

Taking over is a rename of the stale lock file to a unique name, then a fresh exclusive create. Two waiters
that judge the same lock stale at once can, rarely, both end up copying; the lock only saves work, and
correctness never rests on it: every copy goes to a temporary name, is verified, and is renamed into place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from comfyserve.model_store.errors import LockTimeout

log = logging.getLogger(__name__)

LockState = tuple[str, int]  # (holder id, mtime_ns)


def new_holder_id() -> str:
    """Unique per lock attempt: host, process and a random part (safe in file names)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class LeaseLock:
    """``with LeaseLock(path): ...``; ``taken_over`` names the dead holder whose lock we took, if any."""

    def __init__(
        self,
        path: Path,
        *,
        stale_after_s: float = 30.0,
        heartbeat_s: float | None = None,
        timeout_s: float = 3600.0,
        poll_s: float = 0.05,
    ) -> None:
        self.path = path
        self.holder = new_holder_id()
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else stale_after_s / 6
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.taken_over: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        watched: LockState | None = None
        since = time.monotonic()
        while True:
            if self._create():
                self._beat = threading.Thread(target=self._heartbeat, name=f"lease {self.path.name}", daemon=True)
                self._beat.start()
                return
            state = self._read()
            now = time.monotonic()
            if state is None:
                continue  # released between our create and our look: try again at once
            if state != watched:
                watched, since = state, now
            elif now - since >= self.stale_after_s:
                self._take_over(state)
                watched = None
                continue
            if now >= deadline:
                raise LockTimeout(
                    f"{self.path.name}: held by {state[0]} for more than {self.timeout_s:.0f} s and still alive"
                )
            time.sleep(self.poll_s)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._read_holder() == self.holder:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self.holder.encode())
        finally:
            os.close(fd)
        return True

    def _read(self) -> LockState | None:
        try:
            with open(self.path, "rb") as file:  # open() revalidates NFS attributes
                return file.read().decode(errors="replace"), os.fstat(file.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None

    def _read_holder(self) -> str | None:
        state = self._read()
        return state[0] if state is not None else None

    def _take_over(self, state: LockState) -> None:
        aside = self.path.with_name(f"{self.path.name}.stale.{self.holder}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # someone else took it over or the holder released it
        broken = aside.read_text(errors="replace")
        aside.unlink()
        if broken != state[0]:
            log.warning("%s: took over a lock of %s that was renewed meanwhile", self.path.name, broken)
        log.warning("%s: holder %s stopped its heartbeat; taking over", self.path.name, broken)
        self.taken_over = broken

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if self._read_holder() != self.holder:
                self.lost = True
                log.warning("%s: our lock was taken over; the copy goes on (it is verified before use)", self.path)
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)
