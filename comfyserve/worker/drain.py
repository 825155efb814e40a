"""A drain request on a signal, whatever the worker's main thread is doing.

Python runs a signal handler in the main thread only, between bytecodes: while a node sits in one long native
call (a kernel, a decoder) the handler, and with it the drain and its hard deadline, would wait for that call
to return. Here the signal's C-level handler writes the signal number to a socket (``signal.set_wakeup_fd``)
the moment the signal lands, and a thread of its own reads it and runs the drain callbacks; that thread needs
only the GIL, which the native calls of the field's libraries release while they run.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType


def _python_handler(_signum: int, _frame: FrameType | None) -> None:
    """Installed so that the signal does not end the process; the watcher thread acts on it."""


class DrainSignal:
    """``signums`` request a drain (once: later signals change nothing); create it in the main thread."""

    def __init__(self, signums: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.requested = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._signums = frozenset(int(signum) for signum in signums)
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        self._sockets = (reader, writer)  # open for the life of the process
        for signum in self._signums:
            signal.signal(signum, _python_handler)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, name="drain-signal", daemon=True).start()

    def _watch(self) -> None:
        reader = self._sockets[0]
        while data := reader.recv(64):
            if not self._signums.isdisjoint(data):
                self._fire()

    def _fire(self) -> None:
        with self._lock:
            if self.requested.is_set():
                return
            self.requested.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the drain request (at once if it came already), from the watcher thread."""
        with self._lock:
            self._callbacks.append(callback)
            fired = self.requested.is_set()
        if fired:
            callback()
