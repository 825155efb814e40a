"""ComfyUI's other non-UI routes (reference §2.1): system and model information, ``/free``, history edits,
and ComfyUI's native job API (``/api/jobs``). UI-only routes (user data, settings, templates, the frontend's
static files and ``/internal``) are not served: see docs/API.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query

from comfyserve.api.bodies import json_request, parse, raw_json
from comfyserve.api.docs import AUTH_ERRORS as AUTH
from comfyserve.api.docs import empty_ok, error_responses
from comfyserve.api.gate import tenant_of
from comfyserve.api.models import CancelJobs, FreeRequest, QueueEdit
from comfyserve.api.routes_comfyui import TAGS, empty_response
from comfyserve.service import comfyui_info
from comfyserve.service.comfyui import HISTORY_LIMIT
from comfyserve.service.comfyui_jobs import STATUSES
from comfyserve.service.errors import Invalid
from comfyserve.service.job_service import JobService

JOB_TAGS = ["comfyui jobs"]


def _statuses(text: str | None) -> list[str]:
    statuses = [part.strip() for part in (text or "").split(",") if part.strip()] or list(STATUSES)
    unknown = [status for status in statuses if status not in STATUSES]
    if unknown:
        raise Invalid("Invalid status", type_="invalid_status", details=f"{unknown[0]!r}: use {', '.join(STATUSES)}")
    return statuses


def register(app: APIGatewayRestResolver, service: JobService) -> None:
    @app.get(
        "/system_stats",
        summary="System information (ComfyUI)",
        description="ComfyUI's shape, for this API host: jobs run on separate GPU workers, so no GPU is listed.",
        tags=TAGS,
        responses=error_responses(*AUTH),
    )
    def system_stats() -> dict[str, Any]:
        return comfyui_info.system_stats()

    @app.get("/features", summary="Server feature flags (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def features() -> dict[str, Any]:
        return comfyui_info.FEATURE_FLAGS

    @app.get(
        "/extensions",
        summary="Frontend extensions (ComfyUI)",
        description="Always []: no frontend is served.",
        tags=TAGS,
        responses=error_responses(*AUTH),
    )
    def extensions() -> list[str]:
        return []

    @app.get("/models", summary="Model folders (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def models() -> list[str]:
        return service.model_folders()

    @app.get(
        "/models/<folder>",
        summary="Model files of a folder (ComfyUI)",
        tags=TAGS,
        responses=error_responses(*AUTH, 404),
    )
    def model_folder(folder: str) -> list[str]:
        return service.model_folder(unquote(folder))

    @app.get("/embeddings", summary="Embedding names (ComfyUI)", tags=TAGS, responses=error_responses(*AUTH))
    def embeddings() -> list[str]:
        return service.embeddings()

    @app.post(
        "/free",
        summary="Free memory (ComfyUI)",
        description="Accepted and ignored: each worker manages its own model memory (size-aware LRU tiers).",
        tags=TAGS,
        openapi_extensions=json_request(FreeRequest),
        responses={**empty_ok("Done"), **error_responses(400, *AUTH)},
    )
    def free() -> Response[str]:
        parse(FreeRequest, raw_json(app) or {})
        return empty_response()

    @app.post(
        "/history",
        summary="Remove history entries (ComfyUI)",
        description="{'delete': [prompt ids]} and/or {'clear': true}: the entries leave /history; the jobs stay "
        "in /v1/jobs.",
        tags=TAGS,
        openapi_extensions=json_request(QueueEdit),
        responses={**empty_ok("Done"), **error_responses(400, *AUTH)},
    )
    def post_history() -> Response[str]:
        edit = parse(QueueEdit, raw_json(app) or {})
        service.edit_history(tenant_of(app), edit.delete, edit.clear)
        return empty_response()

    @app.get(
        "/jobs",
        summary="Your jobs (ComfyUI's job API)",
        description="{jobs, pagination: {offset, limit, total, has_more}} over your last 1000 jobs; status is a "
        f"comma list of {', '.join(STATUSES)}.",
        tags=JOB_TAGS,
        responses=error_responses(400, *AUTH),
    )
    def list_jobs(
        status: Annotated[str | None, Query(max_length=200)] = None,
        sort_by: Annotated[Literal["created_at", "execution_duration"], Query()] = "created_at",
        sort_order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int | None, Query(ge=1, le=HISTORY_LIMIT)] = None,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        statuses = _statuses(status)
        return service.comfyui_jobs(tenant_of(app), statuses, sort_by, sort_order == "desc", limit, offset)

    @app.get(
        "/jobs/<job_id>",
        summary="One job (ComfyUI's job API)",
        description="With outputs, execution_status and workflow once finished.",
        tags=JOB_TAGS,
        responses=error_responses(*AUTH, 404),
    )
    def get_job(job_id: str) -> dict[str, Any]:
        return service.comfyui_job(tenant_of(app), job_id)

    @app.post(
        "/jobs/<job_id>/cancel",
        summary="Cancel a job (ComfyUI's job API)",
        description="Dequeues a pending job or interrupts a running one; a finished or unknown id is a 200 with "
        "nothing done. Answers {id, status}.",
        tags=JOB_TAGS,
        responses=error_responses(*AUTH),
    )
    def cancel_job(job_id: str) -> dict[str, Any]:
        return service.comfyui_cancel(tenant_of(app), [job_id], batch=False)

    @app.post(
        "/jobs/cancel",
        summary="Cancel jobs (ComfyUI's job API)",
        description="{'job_ids': [...]}; any unknown id is a 404 and nothing is cancelled.",
        tags=JOB_TAGS,
        openapi_extensions=json_request(CancelJobs),
        responses=error_responses(400, *AUTH, 404),
    )
    def cancel_jobs() -> dict[str, Any]:
        request = parse(CancelJobs, raw_json(app))
        return service.comfyui_cancel(tenant_of(app), request.job_ids, batch=True)
