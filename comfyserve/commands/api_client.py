"""A small HTTP client for the comfyserve API (stdlib only): the same calls work against the local server and
the cloud API. Used by ``comfyserve submit`` and the demo."""

from __future__ import annotations

import json
import mimetypes
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from comfyserve.engine.errors import ComfyServeError

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
TIMEOUT_S = 60.0


class ApiError(ComfyServeError):
    """The API answered with an error status; the message carries its error type, message and details."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        try:
            document = json.loads(body)
            error = document.get("error") or {}
            text = error.get("message") or document.get("message") or body.decode(errors="replace")
            details = f" ({error['details']})" if error.get("details") else ""
            self.type = str(error.get("type", "http_error"))
            self.error: dict[str, Any] = error
            self.node_errors: dict[str, Any] = document.get("node_errors") or {}
        except (ValueError, AttributeError):
            text, details, self.type, self.node_errors = body.decode(errors="replace")[:500], "", "http_error", {}
            self.error = {}
        super().__init__(f"HTTP {status} {self.type}: {text}{details}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def base_url(endpoint: str) -> str:
    """The endpoint as an http(s) base URL: ``host:port`` means ``http://host:port``; other schemes are refused."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if not url.startswith(("http://", "https://")):
        raise ComfyServeError(f"endpoint {endpoint!r} is not an http:// or https:// URL")
    return url.rstrip("/")


class Client:
    def __init__(self, endpoint: str, api_key: str | None, timeout_s: float = TIMEOUT_S) -> None:
        self.endpoint = base_url(endpoint)
        self.api_key = api_key
        self.timeout_s = timeout_s

    def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
    ) -> Response:
        """``url`` relative to the endpoint (``/v1/...``) or absolute (a presigned URL, sent without the key)."""
        absolute = url.startswith(("http://", "https://"))
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if sign and not absolute and self.api_key:
            all_headers["x-api-key"] = self.api_key
        request = urllib.request.Request(
            url if absolute else self.endpoint + url, data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return Response(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ComfyServeError(f"cannot reach {self.endpoint}: {exc.reason}") from None

    def upload(self, path: Path) -> str:
        """Upload a local file through a presigned PUT; returns the key to name as an input."""
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        ticket = self.request("POST", "/v1/uploads", body={"filename": path.name, "content_type": content_type})
        view = ticket.json()
        self.request(view["method"], view["url"], data=path.read_bytes(), headers=view["headers"], sign=False)
        return str(view["key"])

    def submit(self, workflow: dict[str, Any], inputs: dict[str, Path] | None = None, **options: Any) -> dict[str, Any]:
        """POST /v1/jobs; ``options`` are further body fields (``output``, ``webhook``, ``timeout_s`` …)."""
        refs = {name: {"key": self.upload(path)} for name, path in (inputs or {}).items()}
        body = {"workflow": workflow, "inputs": refs, **options}
        accepted: dict[str, Any] = self.request("POST", "/v1/jobs", body=body).json()
        return accepted

    def job(self, job_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}").json()
        return view

    def wait(
        self,
        job_id: str,
        on_view: Callable[[dict[str, Any]], None] | None = None,
        poll_s: float = 0.25,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll the job until it is finished; ``on_view`` sees every view (to show progress)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            view = self.job(job_id)
            if on_view is not None:
                on_view(view)
            if view["status"] in TERMINAL:
                return view
            if deadline is not None and time.monotonic() > deadline:
                raise ComfyServeError(f"job {job_id} still {view['status']} after {timeout_s} s")
            time.sleep(poll_s)

    def download_outputs(self, view: dict[str, Any], out_dir: Path) -> list[Path]:
        """Save each output under ``out_dir`` by its relative file name (never outside ``out_dir``)."""
        root = out_dir.resolve()
        saved = []
        for output in view.get("outputs", []):
            parts = [p for p in PurePosixPath(output["filename"]).parts if p not in ("", ".", "..", "/")]
            target = root.joinpath(*parts) if parts else root / "output"
            if not target.resolve().is_relative_to(root):
                raise ComfyServeError(f"refusing output name {output['filename']!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.request("GET", output["url"]).body)
            saved.append(target)
        return saved
