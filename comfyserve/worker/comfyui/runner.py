"""One job through ComfyUI: inputs into its input folder, ``POST /prompt``, the websocket followed to the end of
the prompt, outputs collected from ``/history`` into the job's folder, and ComfyUI's per-job state freed.

Every run gets a fresh run id. Its files live under ``<run id>/`` in ComfyUI's input and output folders:
input values are rewritten to ``<run id>/<file>``, ``filename_prefix`` values to ``<run id>/<prefix>``, so a
job's outputs are named as on a fresh ComfyUI (``ComfyUI_00001_.png``) whichever jobs came before. Each output
node also gets an undeclared input holding the run id: ComfyUI keys its cache on every input but passes only
declared ones to the node, so output nodes always run (and write this job's files) while everything upstream
(loaded models, encoded prompts) is served from ComfyUI's cache as usual.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import time
import urllib.error
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from comfyserve.contracts.jobs import JobError, OutputType
from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.comfyui.client import ComfyUIClient, ComfyUIHTTPError
from comfyserve.worker.comfyui.process import Folders
from comfyserve.worker.outputs import LocalOutput

RUN_INPUT = "comfyserve_run"  # the undeclared input that makes output nodes run for every job
RECV_POLL_S = 0.25
REGISTRATION_TIMEOUT_S = 30.0
TERMINAL = frozenset({"execution_success", "execution_error", "execution_interrupted"})


class Hung(Exception):
    """ComfyUI stopped answering: no end of the prompt within the grace period after ``/interrupt``."""


class Died(Exception):
    """The websocket closed or the process exited before the prompt ended."""


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


def prepare_prompt(
    prompt: Mapping[str, Any], run_id: str, input_values: Mapping[str, str], output_classes: frozenset[str]
) -> dict[str, Any]:
    """A copy of ``prompt`` set up for one run (see the module docstring)."""
    prepared = copy.deepcopy(dict(prompt))
    for node in prepared.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name, value in inputs.items():
            if not isinstance(value, str):
                continue
            if name == "filename_prefix":
                inputs[name] = f"{run_id}/{value}"
            elif value in input_values:
                inputs[name] = input_values[value]
        if node.get("class_type") in output_classes:
            inputs[RUN_INPUT] = run_id
    return prepared


def _strip_run(subfolder: str, run_id: str) -> str:
    parts = PurePosixPath(subfolder).parts
    return "/".join(parts[1:]) if parts[:1] == (run_id,) else subfolder


def _output_items(ui: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every file entry of a node's UI output, whatever its key (images, gifs, audio, video, 3d …)."""
    for items in ui.values():
        if isinstance(items, list):
            yield from (item for item in items if isinstance(item, dict) and isinstance(item.get("filename"), str))


def published_ui(ui: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """An ``executed`` message's output with the run folder taken out of each file's subfolder."""
    renamed: dict[str, Any] = {}
    for key, items in ui.items():
        if isinstance(items, list):
            items = [
                {**item, "subfolder": _strip_run(str(item.get("subfolder") or ""), run_id)}
                if isinstance(item, dict) and "filename" in item
                else item
                for item in items
            ]
        renamed[key] = items
    return renamed


class PromptRun:
    """Runs one :class:`BackendJob` on a ready ComfyUI (``client``) whose folders are ``folders``."""

    def __init__(
        self,
        client: ComfyUIClient,
        folders: Folders,
        output_classes: frozenset[str],
        *,
        client_id: str,
        alive: Callable[[], bool],
        interrupt_grace_s: float,
    ) -> None:
        self.client = client
        self.folders = folders
        self.output_classes = output_classes
        self.client_id = client_id
        self.alive = alive
        self.interrupt_grace_s = interrupt_grace_s

    def run(self, job: BackendJob) -> BackendResult:
        run_id = f"cs-{uuid.uuid4().hex[:12]}"
        try:
            values = self._stage_inputs(job, run_id)
            prompt = prepare_prompt(job.prompt, run_id, values, self.output_classes)
            return self._run(job, run_id, prompt)
        except (ConnectionError, urllib.error.URLError, TimeoutError) as exc:  # any call, ComfyUI gone
            raise Died(f"ComfyUI stopped answering: {exc}") from exc
        finally:
            self._free(job.job_id, run_id)

    # -- inputs --------------------------------------------------------------------------------------

    def _stage_inputs(self, job: BackendJob, run_id: str) -> dict[str, str]:
        """Link (or copy) the job's input files into ``input/<run id>/``; the value each input name becomes."""
        folder = self.folders.input / run_id
        values: dict[str, str] = {}
        for index, (name, path) in enumerate(sorted(job.inputs.items())):
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{index:03d}_{path.name}"
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
            values[name] = f"{run_id}/{target.name}"
        return values

    # -- the prompt ----------------------------------------------------------------------------------

    def _run(self, job: BackendJob, run_id: str, prompt: dict[str, Any]) -> BackendResult:
        prompt_id = job.job_id
        body: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        if job.extra_pnginfo is not None:
            body["extra_data"] = {"extra_pnginfo": job.extra_pnginfo}
        if job.targets is not None:
            body["partial_execution_targets"] = list(job.targets)
        try:
            websocket = self.client.websocket(self.client_id)
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
            followed = self._follow(websocket, job, prompt_id, run_id)
        if followed.end is None:  # no terminal message came: the history says how the prompt ended
            status = self.client.history(prompt_id).get("status") or {}
            followed.end = "execution_success" if status.get("status_str") == "success" else "execution_error"
            followed.end_data = {"exception_message": "the prompt ended without a result", "exception_type": ""}
        if followed.end == "execution_success":
            return BackendResult(
                status="success",
                outputs=self._collect(job, prompt_id, run_id),
                per_node_s=followed.per_node_s,
                executed=followed.executed,
                cached=followed.cached,
            )
        if followed.end == "execution_interrupted":
            return BackendResult(
                status="interrupted", per_node_s=followed.per_node_s, executed=followed.executed, cached=followed.cached
            )
        data = followed.end_data
        error = JobError(
            type="execution_error",
            message=f"{data.get('exception_type', 'Exception')}: {data.get('exception_message', '')}".strip(),
            node_id=_str_or_none(data.get("node_id")),
            node_type=_str_or_none(data.get("node_type")),
        )
        return BackendResult(
            status="error",
            error=error,
            per_node_s=followed.per_node_s,
            executed=followed.executed,
            cached=followed.cached,
        )

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

    def _follow(self, websocket: ClientConnection, job: BackendJob, prompt_id: str, run_id: str) -> Followed:
        followed = Followed()
        interrupted_at: float | None = None
        while not followed.closed:
            if interrupted_at is None and job.cancel_check():
                interrupted_at = time.monotonic()
                with contextlib.suppress(OSError, ComfyUIHTTPError):
                    self.client.interrupt(prompt_id)
            if interrupted_at is not None and time.monotonic() - interrupted_at > self.interrupt_grace_s:
                raise Hung(f"ComfyUI did not stop the prompt within {self.interrupt_grace_s} s of /interrupt")
            if not self.alive():
                raise Died("ComfyUI exited while running the prompt")
            try:
                message = websocket.recv(timeout=RECV_POLL_S)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise Died(f"ComfyUI's websocket closed: {exc}") from exc
            if isinstance(message, str):
                self._handle(message, followed, job, prompt_id, run_id)
        followed.node_started(None)
        return followed

    def _handle(self, message: str, followed: Followed, job: BackendJob, prompt_id: str, run_id: str) -> None:
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
        elif event == "executed" and isinstance(data.get("output"), dict):
            data = {**data, "output": published_ui(data["output"], run_id)}
        elif event in TERMINAL:
            followed.end, followed.end_data = event, data
        if job.on_event is not None:
            job.on_event(event, data)

    # -- outputs -------------------------------------------------------------------------------------

    def _collect(self, job: BackendJob, prompt_id: str, run_id: str) -> list[LocalOutput]:
        """Every output file the history lists, moved into ``<job work dir>/out/`` under its published name."""
        entry = self.client.history(prompt_id)
        outputs: list[LocalOutput] = []
        moved: dict[Path, Path] = {}
        out_dir = job.work_dir / "out"
        for node_id, ui in (entry.get("outputs") or {}).items():
            if not isinstance(ui, dict):
                continue
            for item in _output_items(ui):
                folder = self.folders.by_type(str(item.get("type") or "output"))
                subfolder = str(item.get("subfolder") or "")
                source = (folder / subfolder / item["filename"]) if folder is not None else None
                if source is None or not (source.is_file() or source in moved):
                    continue
                relative = PurePosixPath(_strip_run(subfolder, run_id), item["filename"]).as_posix()
                if source not in moved:
                    target = out_dir / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(source, target)
                    moved[source] = target
                kind: OutputType = "temp" if item.get("type") == "temp" else "output"
                outputs.append(LocalOutput(str(node_id), moved[source], relative, kind))
        return outputs

    def _free(self, prompt_id: str, run_id: str) -> None:
        for folder in (self.folders.input / run_id, self.folders.output / run_id, self.folders.temp / run_id):
            shutil.rmtree(folder, ignore_errors=True)
        if self.alive():
            with contextlib.suppress(OSError, ComfyUIHTTPError):
                self.client.forget(prompt_id)


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
