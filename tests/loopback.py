"""HTTP servers on 127.0.0.1 for tests: a handler that keeps quiet, and a server run on a thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

Server = TypeVar("Server", bound=ThreadingHTTPServer)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log each request to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        return None


def base_url(server: ThreadingHTTPServer) -> str:
    """``http://127.0.0.1:<port>`` of a server bound to loopback."""
    return f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """Serve ``server`` on a thread until the block ends, then shut it down and close its socket."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
