"""``ComfyUIBackend``: the worker's ``Backend`` port over a managed ComfyUI process.

One process serves job after job (its model and node caches stay warm). If it dies or hangs during a job, it
is killed and started again and the job is given back with :class:`ComfyUIRestarted` (the worker releases it);
a job's own failure is a ``BackendResult`` with status ``error``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from comfyserve.worker.backend import BackendJob, BackendResult
from comfyserve.worker.comfyui.catalog import export_catalog
from comfyserve.worker.comfyui.client import ComfyUIClient
from comfyserve.worker.comfyui.config import ComfyUIConfig, ComfyUIError, ComfyUIRestarted
from comfyserve.worker.comfyui.process import ComfyUIProcess
from comfyserve.worker.comfyui.retention import Retention
from comfyserve.worker.comfyui.runner import Died, Hung, PromptRun

log = logging.getLogger(__name__)


class ComfyUIBackend:
    name = "comfyui"

    def __init__(self, config: ComfyUIConfig) -> None:
        self.config = config.checked()
        self.process = ComfyUIProcess(self.config)
        folders = self.process.folders
        self.retention = Retention((folders.output, folders.temp), self.config.retained_jobs)
        self.client_id = f"comfyserve-{uuid.uuid4().hex[:12]}"
        self._object_info: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()  # one prompt at a time: ComfyUI runs one, and one socket per client id

    def start(self) -> None:
        with self._lock:
            if self.process.alive():
                return
            self.retention.reset()  # a fresh ComfyUI: its cache names no file
            self.process.start()
            self._object_info = None

    def _client(self) -> ComfyUIClient:
        client = self.process.client
        if client is None:
            raise ComfyUIError("ComfyUI is not running")
        return client

    def _raw_object_info(self) -> dict[str, Any]:
        if self._object_info is None:
            self._object_info = self._client().object_info()
        return self._object_info

    def object_info(self) -> dict[str, Any]:
        """ComfyUI's ``/object_info`` (core, extras, custom nodes; model lists in the loaders' combos) in
        comfyserve's catalog format, less the classes the configuration does not allow."""
        self.start()
        return export_catalog(self._raw_object_info(), self.config.node_allow, self.config.node_deny)

    def run(self, job: BackendJob) -> BackendResult:
        with self._run_lock:
            return self._run(job)

    def _run(self, job: BackendJob) -> BackendResult:
        self.start()
        runner = PromptRun(
            self._client(),
            self.process.folders,
            self.retention,
            client_id=self.client_id,
            alive=self.process.alive,
            interrupt_grace_s=self.config.interrupt_grace_s,
            ping_s=self.config.ping_s,
        )
        try:
            return runner.run(job)
        except (Died, Hung) as exc:
            log.warning("job %s: %s; restarting ComfyUI\n%s", job.job_id, exc, self.process.log_tail())
            self.process.kill()
            self._restart_quietly()
            raise ComfyUIRestarted(f"ComfyUI was restarted during job {job.job_id}: {exc}") from exc

    def _restart_quietly(self) -> None:
        try:
            self.start()
        except ComfyUIError:
            log.exception("ComfyUI did not come back; the next job starts it again")

    def close(self) -> None:
        with self._lock:
            self.process.stop()
