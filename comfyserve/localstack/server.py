"""The local HTTP server: uvicorn (HTTP/1.1 through httptools, websockets through the ``websockets`` library) serving
:class:`~comfyserve.localstack.edge.EdgeApp` on its own event loop thread.

The socket is bound when the server is built (so a taken port is a one-line :class:`ListenError`, and the blob
URLs know the port before anything is mounted); :meth:`LocalServer.serve_forever` runs the loop until
:meth:`LocalServer.shutdown`. Why uvicorn with httptools: docs/ARCHITECTURE.md (the local edge).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading

import uvicorn

from comfyserve.engine.errors import ComfyServeError
from comfyserve.localstack.edge import EdgeApp, EdgeLimits, Mount
from comfyserve.localstack.protocols import edge_protocols

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512
GRACEFUL_SHUTDOWN_S = 2.0  # open event streams and websockets are cut after this
GIL_SWITCH_S = 0.0005
"""How long a thread waiting for the GIL lets the holder run before asking for it (Python's default is 5 ms).
The event loop gives the GIL up at every socket call and must wait to take it back from the route-table threads:
at 5 ms per wait a request's few turns of the loop cost tens of milliseconds under load (the convoy effect)."""


class ListenError(ComfyServeError):
    """The server cannot bind its address (the port is taken, or the address is not this machine's)."""


def _bind(address: tuple[str, int]) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (and 0 does not), and
    # without it an answer written in two parts waits for the client's delayed ACK (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}") from None
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


class LocalServer:
    def __init__(self, address: tuple[str, int], limits: EdgeLimits | None = None) -> None:
        self.limits = limits or EdgeLimits()
        self._socket = _bind(address)
        self.server_address: tuple[str, int] = self._socket.getsockname()[:2]
        self.app = EdgeApp(self.limits)
        http, ws = edge_protocols(self.limits)
        config = uvicorn.Config(
            self.app,
            http=http,
            ws=ws,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            date_header=False,
            timeout_keep_alive=max(1, round(self.limits.keep_alive_s)),
            timeout_graceful_shutdown=max(1, round(GRACEFUL_SHUTDOWN_S)),
            backlog=LISTEN_BACKLOG,
            ws_max_size=self.limits.ws_max_message,
            ws_per_message_deflate=False,
        )
        self._server = uvicorn.Server(config)
        self._serving = threading.Event()
        self._stopped = threading.Event()

    def mount(self, routes: Mount) -> None:
        self.app.mount_routes(routes)

    @property
    def routes(self) -> Mount | None:
        return self.app.mount

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve on this thread until :meth:`shutdown`."""
        self._serving.set()
        sys.setswitchinterval(GIL_SWITCH_S)  # for the whole process: the server is what it runs
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop accepting, let requests in flight finish (open streams for up to GRACEFUL_SHUTDOWN_S), return."""
        self._server.should_exit = True
        if self._serving.is_set():
            self._stopped.wait(GRACEFUL_SHUTDOWN_S + 10)

    def server_close(self) -> None:
        self._socket.close()
        self.app.close()
