"""A webhook endpoint on 127.0.0.1 that records what it receives and answers scripted statuses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest

from tests.loopback import QuietHandler, base_url, serving


@dataclass
class Receiver:
    """A webhook endpoint that answers with the next scripted status (200 once the script runs out)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(state.delay_s)
            self.send_response(state.script.pop(0) if state.script else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        state.url = base_url(server) + "/hook"
        yield state
