"""A file server on 127.0.0.1 for URL inputs: scripted answers per path, and the paths it was asked for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import pytest

from tests.loopback import QuietHandler, base_url, serving


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True  # False: no Content-Length, the body runs until the connection closes
    delay_s: float = 0.0  # before the body


@dataclass
class FileServer:
    base: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    requested: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(name="file_server")
def file_server_fixture() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            state.requested.append(self.path)
            answer = state.answers.get(self.path, Answer(404))
            self.send_response(answer.status)
            length = {"Content-Length": str(len(answer.body))} if answer.length else {}
            for name, value in {**length, **answer.headers}.items():
                self.send_header(name, value)
            self.end_headers()
            time.sleep(answer.delay_s)
            self.wfile.write(answer.body)

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        state.base = base_url(server)
        yield state
