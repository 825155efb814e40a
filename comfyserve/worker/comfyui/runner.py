"""One job through ComfyUI: inputs into its input folder, ``POST /prompt`` with the prompt exactly as submitted,
the websocket followed to the end of the prompt, outputs collected from ``/history`` into the job's folder, and
ComfyUI's per-job state freed.

The prompt is never rewritten, so the PNGs ComfyUI writes carry it as the client sent it, and a job run again
writes the same bytes. ComfyUI runs one prompt at a time, so its folders are the job's alone while it runs: the
job's input files are linked into the input folder under the very names the workflow uses (and removed after),
and the output and temp folders hold only what the cache may still name (:mod:`.retention`), so files are named
as ComfyUI names them with nothing else around (``ComfyUI_00001_.png`` on a fresh ComfyUI). An output node
that ComfyUI serves from its cache (same inputs as a recent job) runs no code: its history names the files of
that earlier run, which are copied into this job's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from comfyserve.contracts.jobs import JobError, OutputType
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.comfyui.client import ComfyUIClient, ComfyUIHTTPError
from comfyserve.worker.comfyui.process import Folders
from comfyserve.worker.comfyui.retention import Retention
from comfyserve.worker.outputs import LocalOutput, file_entries, non_file_ui

RECV_POLL_S = 0.05  # how often the run looks at the job's cancel flag and at the process
REGISTRATION_TIMEOUT_S = 30.0
CLEANUP_TIMEOUT_S = 5.0  # forgetting a history entry: a ComfyUI that takes longer is not waited for
TERMINAL = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class Hung(Exception):
    """ComfyUI stopped answering: no end of the prompt within the grace period after ``/interrupt``, or no
    answer to the websocket's keep-alive pings."""


class Died(Exception):
    """The websocket closed or the process exited before the prompt ended."""


class BadInput(Exception):
    """A job input's name is not a relative path inside ComfyUI's input folder."""


@dataclass
class Followed:
    """What the websocket said about one prompt. ComfyUI records the history entry after the terminal event and
    then sends ``executing {node: null}``: the prompt is over (and its history readable) only once both came."""

    end: str | None = None  # the terminal event
    end_data: dict[str, Any] = field(default_factory=dict)
    closed: bool = False  # executing {node: null} seen
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    per_node_s: dict[str, float] = field(default_factory=dict)
    _node: str | None = None
    _node_started: float = 0.0

    def node_started(self, node: str | None) -> None:
        now = time.perf_counter()
        if self._node is not None:
            self.per_node_s[self._node] = self.per_node_s.get(self._node, 0.0) + now - self._node_started
        self._node, self._node_started = node, now
        if node is not None and node not in self.executed:
            self.executed.append(node)


def input_path(name: str) -> PurePosixPath:
    """Where ComfyUI finds the input a workflow names ``name``, relative to its input folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise BadInput(f"input {name!r} is not a relative path inside ComfyUI's input folder")
    return path


class PromptRun:
    """Runs one :class:`BackendJob` on a ready ComfyUI (``client``) whose folders are ``folders``."""

    def __init__(
        self,
        client: ComfyUIClient,
        folders: Folders,
        retention: Retention,
        *,
        client_id: str,
        alive: Callable[[], bool],
        interrupt_grace_s: float,
        ping_s: float,
    ) -> None:
        self.client = client
        self.folders = folders
        self.retention = retention
        self.client_id = client_id
        self.alive = alive
        self.interrupt_grace_s = interrupt_grace_s
        self.ping_s = ping_s
        self._named: dict[str, list[Path]] = {}  # node id -> the files this job's history named

    def run(self, job: BackendJob) -> BackendResult:
        try:
            self._stage_inputs(job)
            self.retention.before(job.prompt)
            result = self._run(job)
        except BadInput as exc:
            self._free(job)
            return BackendResult(status="error", error=JobError(type="invalid_input", message=str(exc)))
        except (ConnectionError, urllib.error.URLError, TimeoutError) as exc:  # any call, ComfyUI gone
            raise Died(f"ComfyUI stopped answering: {exc}") from exc
        self._free(job)
        return result

    # -- inputs --------------------------------------------------------------------------------------

    def _stage_inputs(self, job: BackendJob) -> None:
        """Link (or copy) the job's input files into ComfyUI's input folder under the names the workflow uses."""
        self._clear_inputs()
        for name, path in job.inputs.items():
            target = self.folders.input / input_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)

    def _clear_inputs(self) -> None:
        shutil.rmtree(self.folders.input, ignore_errors=True)
        self.folders.input.mkdir(parents=True, exist_ok=True)

    # -- the prompt ----------------------------------------------------------------------------------

    def _run(self, job: BackendJob) -> BackendResult:
        prompt_id = job.job_id
        body: dict[str, Any] = {"prompt": job.prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if job.extra_pnginfo is not None:
            body["extra_data"] = {"extra_pnginfo": job.extra_pnginfo}
        if job.targets is not None:
            body["partial_execution_targets"] = list(job.targets)
        try:
            websocket = self.client.websocket(self.client_id, ping_s=self.ping_s)
        except (OSError, TimeoutError, ConnectionClosed) as exc:
            raise Died(f"cannot open ComfyUI's websocket: {exc}") from exc
        with websocket:
            self._await_registration(websocket)
            try:
                self.client.queue_prompt(body)
            except ComfyUIHTTPError as exc:
                if exc.status == 400:
                    return _refused(exc.body)
                raise
            try:
                followed = self._follow(websocket, job, prompt_id)
            except Hung:
                websocket.close_socket()  # no closing handshake with a ComfyUI that answers nothing
                raise
        entry = self.client.history(prompt_id)
        if followed.end is None:  # no terminal message came: the history says how the prompt ended
            status = entry.get("status") or {}
            followed.end = "execution_success" if status.get("status_str") == "success" else "execution_error"
            followed.end_data = {"exception_message": "the prompt ended without a result", "exception_type": ""}
        outputs, ui = self._collect(job, entry)
        result = BackendResult(
            status="success", per_node_s=followed.per_node_s, executed=followed.executed, cached=followed.cached
        )
        if followed.end == "execution_success":
            result.outputs, result.ui = outputs, ui
        elif followed.end == "execution_interrupted":
            result.status = "interrupted"
        else:
            data = followed.end_data
            result.status = "error"
            result.error = JobError(
                type="execution_error",
                message=f"{data.get('exception_type', 'Exception')}: {data.get('exception_message', '')}".strip(),
                node_id=_str_or_none(data.get("node_id")),
                node_type=_str_or_none(data.get("node_type")),
            )
        return result

    def _await_registration(self, websocket: ClientConnection) -> None:
        """Wait for the ``status`` message ComfyUI sends once it has registered the socket under our client id;
        a prompt queued before that could run with its messages sent to the client's previous socket."""
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                message = websocket.recv(timeout=max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                raise Died(f"ComfyUI's websocket closed: {exc}") from exc
            if isinstance(message, str) and '"status"' in message:
                return
        raise Died(f"ComfyUI sent no status on its websocket within {REGISTRATION_TIMEOUT_S} s")

    def _follow(self, websocket: ClientConnection, job: BackendJob, prompt_id: str) -> Followed:
        followed = Followed()
        interrupted_at: float | None = None
        while not followed.closed:
            if interrupted_at is None and job.cancel_check():
                interrupted_at = time.monotonic()
                self._interrupt(prompt_id)
            if interrupted_at is not None and time.monotonic() - interrupted_at > self.interrupt_grace_s:
                raise Hung(f"ComfyUI did not stop the prompt within {self.interrupt_grace_s} s of /interrupt")
            if not self.alive():
                raise Died("ComfyUI exited while running the prompt")
            try:
                message = websocket.recv(timeout=RECV_POLL_S)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1011:  # keep-alive ping unanswered
                    raise Hung(f"ComfyUI answered no websocket ping within {self.ping_s} s") from exc
                raise Died(f"ComfyUI's websocket closed: {exc}") from exc
            if isinstance(message, str):
                self._handle(message, followed, job, prompt_id)
        followed.node_started(None)
        return followed

    def _interrupt(self, prompt_id: str) -> None:
        """``POST /interrupt``, waited for no longer than the grace period: a ComfyUI that does not answer it
        in that time is hung."""
        try:
            self.client.interrupt(prompt_id, timeout_s=self.interrupt_grace_s)
        except ComfyUIHTTPError:
            pass
        except TimeoutError as exc:
            raise Hung(f"ComfyUI did not answer /interrupt within {self.interrupt_grace_s} s") from exc

    def _handle(self, message: str, followed: Followed, job: BackendJob, prompt_id: str) -> None:
        try:
            parsed = json.loads(message)
            event, data = str(parsed["type"]), parsed["data"]
        except (ValueError, KeyError, TypeError):
            return
        if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
            return
        if event == "executing":
            node = data.get("node")
            followed.node_started(str(node) if node is not None else None)
            followed.closed = node is None
        elif event == "execution_cached":
            followed.cached = [str(node) for node in data.get("nodes") or []]
        elif event in TERMINAL:
            followed.end, followed.end_data = event, data
        if job.on_event is not None:
            job.on_event(event, data)

    # -- outputs -------------------------------------------------------------------------------------

    def _collect(self, job: BackendJob, entry: Mapping[str, Any]) -> tuple[list[LocalOutput], dict[str, Any]]:
        """Every output file the history lists, copied into ``<job work dir>/out/`` under its own name, and
        every node's non-file UI output."""
        outputs: list[LocalOutput] = []
        ui_values: dict[str, Any] = {}
        copied: dict[Path, Path] = {}
        out_dir = job.work_dir / "out"
        for node_id, ui in (entry.get("outputs") or {}).items():
            if not isinstance(ui, dict):
                continue
            if values := non_file_ui(ui):
                ui_values[str(node_id)] = values
            for item in file_entries(ui):
                kind = str(item.get("type") or "output")
                folder = self.folders.by_type(kind)
                relative = PurePosixPath(str(item.get("subfolder") or ""), item["filename"])
                source = folder / relative if folder is not None and kind != "input" else None
                if source is None or not source.is_file():
                    continue
                self._named.setdefault(str(node_id), []).append(source)
                if source not in copied:
                    target = out_dir / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(source, target)
                    except OSError:
                        shutil.copyfile(source, target)
                    copied[source] = target
                output_type: OutputType = "temp" if kind == "temp" else "output"
                outputs.append(LocalOutput(str(node_id), copied[source], relative.as_posix(), output_type))
        return outputs, ui_values

    def _free(self, job: BackendJob) -> None:
        """After a run ComfyUI answered to the end: its history entry deleted, the job's inputs removed, the
        files its history named remembered for the next job."""
        with contextlib.suppress(OSError, ComfyUIHTTPError):
            self.client.forget(job.job_id, timeout_s=CLEANUP_TIMEOUT_S)
        self._clear_inputs()
        self.retention.after(job.prompt, self._named)


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _refused(answer: dict[str, Any]) -> BackendResult:
    """A ``POST /prompt`` 400: ComfyUI's validation error as the job's error."""
    error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
    node_errors: dict[str, Any] = answer["node_errors"] if isinstance(answer.get("node_errors"), dict) else {}
    first = next(iter(node_errors.items()), None)
    message = str(error.get("message") or "ComfyUI refused the prompt")
    details = str(error.get("details") or "")
    if first is not None and isinstance(first[1], dict):
        errors = first[1].get("errors") or [{}]
        reason = errors[0] if isinstance(errors[0], dict) else {}
        details = details or f"{reason.get('message', '')}: {reason.get('details', '')}"
    return BackendResult(
        status="error",
        error=JobError(
            type=str(error.get("type") or "invalid_prompt"),
            message=f"{message}: {details}" if details else message,
            node_id=str(first[0]) if first is not None else None,
            node_type=str(first[1].get("class_type")) if first is not None and isinstance(first[1], dict) else None,
        ),
    )
