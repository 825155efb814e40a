"""The job service: one facade over the use cases, wired from the ports. The HTTP routes (Lambda and the
local server alike) call only this."""

from __future__ import annotations

from typing import Any

from comfyserve.contracts.jobs import JobRecord, JobStatus, OutputRef
from comfyserve.engine.validation import ValidationResult
from comfyserve.ports import BlobNotFound
from comfyserve.service import (
    assets,
    comfyui,
    comfyui_info,
    comfyui_jobs,
    comfyui_uploads,
    history,
    jobs,
    ui_workflows,
    uploads,
    v2_jobs,
)
from comfyserve.service.comfyui_uploads import ImageUpload, UploadedImage
from comfyserve.service.deps import ServiceDeps
from comfyserve.service.errors import Conflict, NotFound
from comfyserve.service.idempotency import body_hash
from comfyserve.service.models import JobSubmission, PromptRequest, UploadRequest, ValidateRequest
from comfyserve.service.settings import ServiceSettings
from comfyserve.service.submit import Draft, Submitted, Submitter
from comfyserve.service.uploads import UploadTicket
from comfyserve.service.validate import check_workflow
from comfyserve.ui_workflow import UIWorkflowError


class JobService:
    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self._submitter = Submitter(deps)
        self._object_info: dict[str, Any] | None = None
        self._object_info_of: object = None

    @property
    def settings(self) -> ServiceSettings:
        return self.deps.settings

    def submit(self, tenant: str, request: JobSubmission, idempotency_key: str | None = None) -> Submitted:
        prompt = request.workflow
        if request.workflow_key is not None:
            prompt = uploads.load_uploaded_workflow(self.deps, tenant, request.workflow_key)
        prompt = ui_workflows.api_prompt(self.deps, prompt)
        draft = Draft(
            prompt=prompt,
            inputs=request.inputs,
            output=request.output,
            webhook=request.webhook,
            timeout_s=request.timeout_s,
            metadata=request.metadata,
            targets=request.partial_execution_targets,
            idempotency_key=idempotency_key,
            body_hash=body_hash(request.model_dump(mode="json")) if idempotency_key else None,
        )
        return self._submitter.submit(tenant, draft)

    def submit_prompt(self, tenant: str, request: PromptRequest) -> Submitted:
        return self._submitter.submit(tenant, comfyui.prompt_draft(tenant, request))

    def get(self, tenant: str, job_id: str) -> JobRecord:
        return jobs.get_job(self.deps, tenant, job_id)

    def list_jobs(
        self, tenant: str, *, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        return jobs.list_jobs(self.deps, tenant, status=status, limit=limit, cursor=cursor)

    def cancel(self, tenant: str, job_id: str) -> JobRecord:
        return jobs.cancel_job(self.deps, tenant, job_id)

    def validate(self, request: ValidateRequest) -> ValidationResult:
        try:
            workflow = ui_workflows.convert(self.deps, request.workflow)
        except UIWorkflowError as exc:
            return ValidationResult(False, ui_workflows.conversion_error(exc), {}, [], {})
        return check_workflow(
            self.deps,
            workflow,
            input_names=request.input_names,
            targets=request.partial_execution_targets,
            strict=request.strict,
        )

    def create_upload(self, tenant: str, request: UploadRequest) -> UploadTicket:
        return uploads.create_upload(self.deps, tenant, request)

    def output_url(self, ref: OutputRef) -> str:
        return self.deps.blobs.presigned_get(ref.key, self.deps.settings.presign_expiry_s)

    def object_info(self) -> dict[str, Any]:
        """The catalog in ``/object_info`` shape (built once per catalog version: a published one can change)."""
        specs = self.deps.catalog.specs
        if self._object_info is None or self._object_info_of is not specs:
            self._object_info, self._object_info_of = self.deps.catalog.to_object_info(), specs
        return self._object_info

    # ComfyUI's routes
    def history(self, tenant: str, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        return comfyui.history(self.deps, tenant, max_items, offset)

    def history_of(self, tenant: str, prompt_id: str) -> dict[str, Any]:
        return comfyui.history_of(self.deps, tenant, prompt_id)

    def queue(self, tenant: str) -> dict[str, Any]:
        return comfyui.queue(self.deps, tenant)

    def queue_remaining(self, tenant: str) -> int:
        return comfyui.queue_remaining(self.deps, tenant)

    def delete_queued(self, tenant: str, prompt_ids: list[str], clear: bool) -> None:
        comfyui.delete_queued(self.deps, tenant, prompt_ids, clear)

    def interrupt(self, tenant: str, prompt_id: str | None) -> None:
        comfyui.interrupt(self.deps, tenant, prompt_id)

    def edit_history(self, tenant: str, delete: list[str], clear: bool) -> None:
        comfyui.edit_history(self.deps, tenant, delete, clear)

    def object_info_for(self, tenant: str) -> dict[str, Any]:
        """``/object_info`` with the model files of the inventory and the tenant's uploads as choices."""
        models = comfyui_info.model_files(self.deps.inventory)
        return comfyui_info.with_choices(self.object_info(), models, comfyui_info.uploaded_images(self.deps, tenant))

    def model_folders(self) -> list[str]:
        return list(comfyui_info.model_files(self.deps.inventory))

    def model_folder(self, folder: str) -> list[str]:
        return comfyui_info.folder_files(self.deps.inventory, folder)

    def embeddings(self) -> list[str]:
        return comfyui_info.embeddings(self.deps.inventory)

    def comfyui_jobs(
        self,
        tenant: str,
        statuses: list[str],
        sort_by: comfyui_jobs.SortBy,
        descending: bool,
        limit: int | None,
        offset: int,
    ) -> dict[str, Any]:
        return comfyui_jobs.list_jobs(self.deps, tenant, statuses, sort_by, descending, limit, offset)

    def comfyui_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        return comfyui_jobs.get_job(self.deps, tenant, job_id)

    # Comfy API v2
    def submit_v2(self, tenant: str, request: v2_jobs.JobRequest, idempotency_key: str | None) -> Submitted:
        """As :meth:`submit`, but Comfy API v2 refuses any reuse of an Idempotency-Key, naming the job."""
        submitted = self._submitter.submit(tenant, v2_jobs.draft(self.deps, tenant, request, idempotency_key))
        if submitted.replayed:
            job_id = submitted.record.job_id
            raise Conflict(
                "Idempotency-Key already used",
                type_="idempotency_key_reused",
                details=f"job {job_id} was created with this key",
                extra_info={"job_id": job_id},
            )
        return submitted

    def v2_job(self, record: JobRecord, base: str) -> dict[str, Any]:
        return v2_jobs.job_view(self.deps, record, base)

    def v2_jobs(
        self, tenant: str, filters: dict[str, str], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        records, next_cursor = v2_jobs.list_jobs(self.deps, tenant, filters, limit, cursor)
        return [v2_jobs.list_item(self.deps, record) for record in records], next_cursor

    def v2_cancel(self, tenant: str, job_id: str) -> JobRecord:
        return comfyui_jobs.cancel_record(self.deps, self.get(tenant, job_id))

    def v2_events(self, tenant: str, job_id: str, base: str) -> str:
        return v2_jobs.events(self.deps, self.get(tenant, job_id), base)

    def v2_workflow(self, tenant: str, job_id: str) -> dict[str, Any]:
        return v2_jobs.workflow_of(self.deps, tenant, job_id)

    def asset_create(
        self,
        tenant: str,
        data: bytes,
        content_type: str,
        file_path: str | None,
        expected_hash: str | None,
        tags: list[str],
    ) -> dict[str, Any]:
        record, created_new = assets.create(self.deps, tenant, data, content_type, file_path, expected_hash, tags)
        return assets.view(self.deps, tenant, record, created_new)

    def asset_from_hash(self, tenant: str, hash_text: str, file_path: str | None, tags: list[str]) -> dict[str, Any]:
        return assets.view(self.deps, tenant, assets.from_hash(self.deps, tenant, hash_text, file_path, tags), False)

    def asset_exists(self, tenant: str, hash_text: str) -> bool:
        return assets.exists(self.deps, tenant, hash_text)

    def asset(self, tenant: str, asset_id: str) -> dict[str, Any]:
        output = v2_jobs.output_asset(self.deps, tenant, asset_id)
        if output is not None:
            return v2_jobs.output_asset_view(self.deps, *output)
        return assets.view(self.deps, tenant, assets.get(self.deps, tenant, asset_id))

    def asset_blob(self, tenant: str, asset_id: str) -> OutputRef:
        """Where an asset's bytes are (an output's, or an uploaded asset's content)."""
        output = v2_jobs.output_asset(self.deps, tenant, asset_id)
        if output is not None:
            return output[2]
        record = assets.get(self.deps, tenant, asset_id)
        key = assets.content_key(tenant, record.hex)
        name = record.file_path or record.id
        return OutputRef(node_id="", key=key, filename=name, content_type=record.content_type, size=record.size_bytes)

    def asset_delete(self, tenant: str, asset_id: str) -> None:
        if v2_jobs.output_asset(self.deps, tenant, asset_id) is not None:
            raise Conflict("Outputs are deleted with their job", type_="invalid_request", details=asset_id)
        assets.delete(self.deps, tenant, asset_id)

    def comfyui_cancel(self, tenant: str, job_ids: list[str], *, batch: bool) -> dict[str, Any]:
        if batch:
            return comfyui_jobs.cancel_many(self.deps, tenant, job_ids)
        return comfyui_jobs.cancel(self.deps, tenant, job_ids[0])

    def upload_image(self, tenant: str, upload: ImageUpload) -> UploadedImage:
        return comfyui_uploads.upload_image(self.deps, tenant, upload)

    def find_output(self, tenant: str, filename: str, subfolder: str, type_: str) -> OutputRef:
        return history.find_output(self.deps, tenant, filename, subfolder, type_)

    def output_bytes(self, ref: OutputRef) -> bytes:
        try:
            return self.deps.blobs.get(ref.key)
        except BlobNotFound:
            raise NotFound("Output not found", type_="output_not_found", details=ref.filename) from None
