"""ECS task scale-in protection against a fake ECS agent over real HTTP on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from comfyserve.worker.ecs_protection import EcsTaskProtection, task_protection
from comfyserve.worker.protection import NoProtection
from tests.loopback import QuietHandler, base_url, serving


class FakeAgent(ThreadingHTTPServer):
    """Records each ``PUT /api/<task>/task-protection/v1/state`` body; answers as the agent does."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.refuse = False

    @property
    def uri(self) -> str:
        return base_url(self) + "/api/task-1"


class _Handler(QuietHandler):
    server: FakeAgent

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        if self.server.refuse:
            answer: dict[str, Any] = {"failure": {"Reason": "TASK_NOT_VALID", "Detail": "stopping"}}
        else:
            answer = {"protection": {"ProtectionEnabled": body["ProtectionEnabled"]}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def agent() -> Iterator[FakeAgent]:
    with serving(FakeAgent()) as server:
        yield server


def test_protection_is_set_while_busy_and_cleared_when_idle(agent: FakeAgent) -> None:
    protection = EcsTaskProtection(agent.uri)

    protection.protect(3900)  # a job: 60 min cap + 5 min
    protection.protect(3900)  # the next job, back to back: still held, no request
    protection.release()
    protection.release()  # idle again: nothing to drop

    path = "/api/task-1/task-protection/v1/state"
    assert agent.requests == [
        (path, {"ProtectionEnabled": True, "ExpiresInMinutes": 65}),
        (path, {"ProtectionEnabled": False}),
    ]


def test_expiry_is_rounded_up_and_kept_within_the_agents_range(agent: FakeAgent) -> None:
    for seconds in (1, 61, 10 * 24 * 3600):
        protection = EcsTaskProtection(agent.uri)
        protection.protect(seconds)
    assert [body["ExpiresInMinutes"] for _, body in agent.requests] == [1, 2, 2880]


def test_a_refused_request_is_asked_again_at_the_next_job(agent: FakeAgent) -> None:
    protection = EcsTaskProtection(agent.uri)
    agent.refuse = True
    protection.protect(600)
    protection.release()  # never held: no request
    agent.refuse = False
    protection.protect(600)
    assert [body["ProtectionEnabled"] for _, body in agent.requests] == [True, True]


def test_an_agent_that_is_down_never_stops_the_job(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeAgent()
    uri = server.uri
    server.server_close()  # nothing listens on the port any more
    protection = EcsTaskProtection(uri, timeout_s=0.5)

    protection.protect(600)
    protection.release()

    assert any("task protection" in record.getMessage() for record in caplog.records)


def test_no_agent_means_no_protection(agent: FakeAgent) -> None:
    assert isinstance(task_protection(None), NoProtection)
    assert isinstance(task_protection(""), NoProtection)
    assert isinstance(task_protection(agent.uri), EcsTaskProtection)
