"""Submitting a job: parse the workflow once (:func:`~comfyserve.service.validate.parse_workflow`) → attach the
uploads its ``LoadImage`` values name → validate → claim-check workflow and
inputs → create the record (conditional, ``dispatch_pending``) → enqueue a small message → publish
``JobQueued`` and clear ``dispatch_pending`` (comfyserve.service.reconcile).

Nothing is recorded or enqueued for a request that fails a check; blobs written for a request that then
loses the conditional create are removed again. A message the queue refuses fails the job at once (503). Once
the message is on the queue the job is accepted (202): an event the bus refuses stays owed on the record and the
reconciler publishes it, as it sends the message of a job whose submit died between its two writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from comfyserve.contracts.comfyui import COMFYUI_META_KEY, ComfyUIMeta
from comfyserve.contracts.jobs import (
    InputRef,
    JobError,
    JobRecord,
    JobStatus,
    OutputOptions,
    WebhookSpec,
)
from comfyserve.engine.errors import WorkflowFormatError
from comfyserve.engine.validation import ValidationResult
from comfyserve.netguard import UnsafeURL, check_public_url
from comfyserve.ports import IdempotencyKeyInUse, JobAlreadyExists
from comfyserve.service import idempotency, keys
from comfyserve.service.backpressure import BacklogGate
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, Invalid, Unavailable
from comfyserve.service.inputs import attach_uploads, resolve_inputs, upload_values
from comfyserve.service.models import InputSource
from comfyserve.service.reconcile import announce, send_message
from comfyserve.service.validate import check_prompt, format_error, parse_workflow

log = logging.getLogger(__name__)

# ComfyUI drops these from extra_data before it stores a prompt (credentials for its paid API nodes).
SENSITIVE_EXTRA_DATA = ("api_key_comfy_org", "auth_token_comfy_org")


@dataclass(frozen=True)
class Draft:
    """A submission in the service's terms, whichever route it came through."""

    prompt: Any
    inputs: Mapping[str, InputSource] = field(default_factory=dict)
    output: OutputOptions = field(default_factory=OutputOptions)
    webhook: WebhookSpec | None = None
    timeout_s: int | None = None
    metadata: dict[str, JsonValue] = field(default_factory=dict)
    targets: list[str] | None = None
    job_id: str | None = None
    prompt_id: str | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    client_id: str | None = None
    extra_data: dict[str, Any] = field(default_factory=dict)
    strict: bool = True


@dataclass(frozen=True)
class Submitted:
    record: JobRecord
    node_errors: dict[str, Any]
    replayed: bool = False


class Submitter:
    def __init__(self, deps: ServiceDeps) -> None:
        self._deps = deps
        self._backlog = BacklogGate(deps.queue, deps.settings)

    def submit(self, tenant: str, draft: Draft) -> Submitted:
        idempotency.check_key(draft.idempotency_key)
        self._check_webhook(draft.webhook)
        self._backlog.check()
        try:
            prompt = parse_workflow(draft.prompt)
        except WorkflowFormatError as exc:
            raise Invalid.from_validation(format_error(exc)) from None
        uploads = upload_values(self._deps, prompt)
        attached = attach_uploads(self._deps, tenant, uploads, draft.inputs)
        # Every image a node names must be an input, an upload of the tenant's or a URL: ComfyUI refuses an
        # unknown image at validation too, and a path ('/etc/…', '../…') is never one.
        result = check_prompt(
            self._deps,
            prompt,
            input_names={*draft.inputs, *attached},
            targets=draft.targets,
            strict=draft.strict,
        )
        if not result.ok:
            raise Invalid.from_validation(result)
        job_id = draft.job_id or self._deps.new_id()
        if draft.job_id is not None and self._deps.jobs.get_by_id(job_id) is not None:
            raise self._taken(draft.prompt_id or job_id)  # before any claim check: its keys would be the existing job's
        written: list[str] = []
        try:
            inputs = resolve_inputs(self._deps, tenant, job_id, {**draft.inputs, **attached}, written, uploads)
            record = self._record(tenant, job_id, draft, result, inputs, written)
            self._deps.jobs.create(record)
        except IdempotencyKeyInUse as exc:
            self._discard(written)
            holder = self._deps.jobs.get(tenant, exc.job_id)
            return Submitted(idempotency.replay(holder, exc.key, draft.body_hash), {}, replayed=True)
        except JobAlreadyExists:
            self._discard(written)
            raise self._taken(draft.prompt_id or job_id) from None
        except BaseException:
            self._discard(written)
            raise
        self._enqueue(record)
        announce(self._deps.jobs, self._deps.events, record, self._deps.clock())
        return Submitted(record, result.node_errors)

    @staticmethod
    def _taken(job_id: str) -> Conflict:
        return Conflict("Job id already in use", type_="job_exists", details=f"job {job_id} exists")

    def _check_webhook(self, webhook: WebhookSpec | None) -> None:
        if webhook is None:
            return
        try:
            check_public_url(webhook.url, allow_private=self._deps.settings.allow_private_urls)
        except UnsafeURL as exc:
            raise Invalid("Webhook URL refused", type_="invalid_webhook", details=exc.reason) from None

    def _record(
        self,
        tenant: str,
        job_id: str,
        draft: Draft,
        result: ValidationResult,
        inputs: dict[str, InputRef],
        written: list[str],
    ) -> JobRecord:
        workflow: dict[str, Any] | None = result.prompt
        workflow_key = None
        prompt_json = json.dumps(result.prompt, separators=(",", ":")).encode()
        if len(prompt_json) > self._deps.settings.inline_workflow_bytes:
            workflow, workflow_key = None, keys.workflow_key(tenant, job_id)
            self._put(workflow_key, prompt_json, written)
        extra = {k: v for k, v in draft.extra_data.items() if k not in SENSITIVE_EXTRA_DATA}
        extra_key = keys.extra_data_key(tenant, job_id) if extra else None
        if extra_key is not None:
            self._put(extra_key, json.dumps(extra, separators=(",", ":")).encode(), written)
        meta = ComfyUIMeta(
            client_id=draft.client_id,
            outputs=result.outputs,
            targets=draft.targets,
            extra_data_key=extra_key,
            prompt_id=draft.prompt_id,
        )
        now = self._deps.clock()
        return JobRecord(
            job_id=job_id,
            tenant=tenant,
            created_at=now,
            updated_at=now,
            workflow=workflow,
            workflow_key=workflow_key,
            inputs=inputs,
            output=draft.output,
            webhook=draft.webhook,
            timeout_s=draft.timeout_s,
            metadata={**draft.metadata, COMFYUI_META_KEY: meta.model_dump(mode="json", exclude_none=True)},
            idempotency_key=draft.idempotency_key,
            body_hash=draft.body_hash if draft.idempotency_key else None,
            dispatch_pending=True,
        )

    def _put(self, key: str, data: bytes, written: list[str]) -> None:
        self._deps.blobs.put(key, data, "application/json")
        written.append(key)

    def _discard(self, written: list[str]) -> None:
        for key in written:
            try:
                self._deps.blobs.delete(key)
            except Exception:  # cleanup is best effort; the original error is what the caller must see
                log.warning("could not delete %s after a failed submit", key, exc_info=True)

    def _enqueue(self, record: JobRecord) -> None:
        try:
            send_message(self._deps.queue, record)
        except Exception as exc:
            log.exception("enqueue of job %s failed", record.job_id)
            self._withdraw(record, exc)
            raise Unavailable("The job queue is unavailable", details=f"job {record.job_id} was not queued") from exc

    def _withdraw(self, record: JobRecord, exc: Exception) -> None:
        """A record whose message never made it to the queue must not stay ``queued`` forever: it fails."""
        error = JobError(type="enqueue_failed", message=f"the job could not be queued: {type(exc).__name__}")
        try:
            self._deps.jobs.transition(
                record.job_id,
                {JobStatus.QUEUED},
                JobStatus.FAILED,
                finished_at=self._deps.clock(),
                error=error,
                dispatch_pending=False,
            )
        except Exception:
            log.exception("could not withdraw job %s after the enqueue failure", record.job_id)
