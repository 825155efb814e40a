"""A small client of ComfyUI's HTTP API on loopback (JSON in, JSON out) and its websocket URL."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from websockets.sync.client import ClientConnection, connect

HTTP_TIMEOUT_S = 30.0
OBJECT_INFO_TIMEOUT_S = 300.0  # every loader lists its folders; slow on a cold disk


class ComfyUIHTTPError(Exception):
    """ComfyUI answered with an error status; ``body`` is its JSON answer (or ``{}``)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {json.dumps(body)[:500]}")
        self.status = status
        self.body = body


class ComfyUIClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _request(self, method: str, path: str, body: Any = None, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            raise ComfyUIHTTPError(exc.code, answer if isinstance(answer, dict) else {}) from None
        except urllib.error.URLError as exc:  # a timeout while connecting or sending is one, like one reading
            if isinstance(exc.reason, TimeoutError):
                raise TimeoutError(f"{method} {path}: no answer within {timeout_s} s") from exc
            raise
        except http.client.HTTPException as exc:  # the connection broke mid-answer (ComfyUI died)
            raise ConnectionError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return json.loads(text) if text.strip() else None

    def get(self, path: str, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        return self._request("GET", path, timeout_s=timeout_s)

    def post(self, path: str, body: Any, timeout_s: float = HTTP_TIMEOUT_S) -> Any:
        return self._request("POST", path, body, timeout_s=timeout_s)

    def ready(self) -> bool:
        """Whether ComfyUI answers ``GET /system_stats``."""
        try:
            self.get("/system_stats", timeout_s=2.0)
        except (OSError, ValueError, ComfyUIHTTPError):
            return False
        return True

    def queue_prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.post("/prompt", body)
        return answer if isinstance(answer, dict) else {}

    def history(self, prompt_id: str) -> dict[str, Any]:
        answer = self.get("/history/" + urllib.parse.quote(prompt_id, safe=""))
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        return entry if isinstance(entry, dict) else {}

    def forget(self, prompt_id: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        """Delete the prompt's history entry (ComfyUI keeps up to 10,000 otherwise)."""
        self.post("/history", {"delete": [prompt_id]}, timeout_s=timeout_s)

    def interrupt(self, prompt_id: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.post("/interrupt", {"prompt_id": prompt_id}, timeout_s=timeout_s)

    def object_info(self) -> dict[str, Any]:
        answer = self.get("/object_info", timeout_s=OBJECT_INFO_TIMEOUT_S)
        if not isinstance(answer, dict):
            raise ValueError("GET /object_info did not answer a JSON object")
        return answer

    def websocket(self, client_id: str, ping_s: float | None = None) -> ClientConnection:
        """The websocket of ``client_id``; with ``ping_s``, a ping every ``ping_s`` seconds, and the connection
        failed (code 1011) when one goes unanswered for ``ping_s`` seconds, a closing handshake waited for no
        longer: a silent peer is noticed within three times ``ping_s``."""
        url = self.base_url.replace("http", "ws", 1) + "/ws?clientId=" + urllib.parse.quote(client_id, safe="")
        return connect(
            url,
            open_timeout=HTTP_TIMEOUT_S,
            max_size=None,
            compression=None,
            ping_interval=ping_s,
            ping_timeout=ping_s,
            close_timeout=ping_s if ping_s is not None else HTTP_TIMEOUT_S,
        )
