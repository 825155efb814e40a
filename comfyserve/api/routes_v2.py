"""Comfy API v2 (the API comfy-sdk speaks to Comfy Cloud and to ComfyUI behind comfy-api-proxy), served at
``/api/v2``: jobs, their event stream, and assets. Errors use that API's envelope (``v2_errors``)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from pydantic import BaseModel, Field

from comfyserve.api.bodies import form_body, parse, raw_json
from comfyserve.api.docs import JSON, ok, v2_errors
from comfyserve.api.gate import tenant_of
from comfyserve.api.models_v2 import V2Asset, V2Job, V2JobList, V2Workflow
from comfyserve.api.routes_comfyui import binary_response
from comfyserve.service.errors import Invalid, ServiceError
from comfyserve.service.job_service import JobService
from comfyserve.service.jobs import PAGE_LIMIT
from comfyserve.service.v2_jobs import JobRequest

TAGS = ["comfy api v2"]
TEXT = {"type": "string"}
_METADATA_PARAM = re.compile(r"^metadata\[(.{1,128})\]$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class FromHash(BaseModel):
    hash: str = Field(max_length=80)
    file_path: str | None = Field(default=None, max_length=255)
    tags: list[str] = Field(default_factory=list, max_length=32)


class RangeNotSatisfiable(ServiceError):
    status = 416
    default_type = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__("Range not satisfiable", details=f"the asset has {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


def mount_base(app: Any) -> str:
    """The path the API is mounted under: '' locally, '/<stage>' behind API Gateway's stage URL."""
    event = app.current_event
    full = str((event.get("requestContext") or {}).get("path") or event.path)
    return full[: -len(event.path)] if full.endswith(event.path) else ""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive of a single ``bytes=`` range, ``None`` without one; 416 when unsatisfiable."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise RangeNotSatisfiable(size)
    first, last = match.group(1), match.group(2)
    if not first:
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        raise RangeNotSatisfiable(size)
    return start, end


def register(app: APIGatewayRestResolver, service: JobService) -> None:
    def job(record: Any, status: int = 200) -> Response[dict[str, Any]]:
        return Response(status, JSON, service.v2_job(record, mount_base(app)))

    @app.post(
        "/v2/jobs",
        summary="Submit a job (Comfy API v2)",
        tags=TAGS,
        responses={**ok(201, V2Job, "The job"), **v2_errors(400, 401, 403, 413, 415, 422, 429, 503)},
    )
    def submit(
        body: Annotated[JobRequest, Body()],
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> Response[dict[str, Any]]:
        submitted = service.submit_v2(tenant_of(app), body, idempotency_key)
        return job(submitted.record, 201)

    @app.get(
        "/v2/jobs",
        summary="List jobs (Comfy API v2)",
        description="Newest first; filter with metadata[<key>]=<value>; next_cursor is absent on the last page.",
        tags=TAGS,
        responses={**ok(200, V2JobList, "A page of jobs"), **v2_errors(400, 401, 403)},
    )
    def list_jobs(
        limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=2048)] = None,
    ) -> dict[str, Any]:
        params = app.current_event.query_string_parameters or {}
        filters = {m.group(1): v for name, v in params.items() if (m := _METADATA_PARAM.match(name))}
        jobs, next_cursor = service.v2_jobs(tenant_of(app), filters, limit, cursor)
        return {"jobs": jobs, **({"next_cursor": next_cursor} if next_cursor else {})}

    @app.get(
        "/v2/jobs/<job_id>",
        summary="A job (Comfy API v2)",
        tags=TAGS,
        responses={**ok(200, V2Job, "The job"), **v2_errors(401, 403, 404)},
    )
    def get_job(job_id: str) -> Response[dict[str, Any]]:
        return job(service.get(tenant_of(app), job_id))

    @app.post(
        "/v2/jobs/<job_id>/cancel",
        summary="Cancel a job (Comfy API v2)",
        description="Idempotent: a queued job is canceled, a running one is canceling until its worker stops it.",
        tags=TAGS,
        responses={**ok(200, V2Job, "The job after the request"), **v2_errors(401, 403, 404)},
    )
    def cancel(job_id: str) -> Response[dict[str, Any]]:
        return job(service.v2_cancel(tenant_of(app), job_id))

    @app.get(
        "/v2/jobs/<job_id>/events",
        summary="The job's events (Comfy API v2, server-sent events)",
        description="A snapshot: the current status and progress while the job runs; its outputs and its terminal "
        "status once finished. The stream then ends; reconnect for more (API Gateway buffers responses).",
        tags=TAGS,
        responses={
            200: {"description": "Server-sent events", "content": {"text/event-stream": {"schema": TEXT}}},
            **v2_errors(401, 403, 404),
        },
    )
    def events(job_id: str) -> Response[str]:
        text = service.v2_events(tenant_of(app), job_id, mount_base(app))
        return Response(200, "text/event-stream", text, headers={"Cache-Control": "no-cache"})

    @app.get(
        "/v2/jobs/<job_id>/workflow",
        summary="The workflow a job ran (Comfy API v2)",
        tags=TAGS,
        responses={**ok(200, V2Workflow, "The workflow"), **v2_errors(401, 403, 404)},
    )
    def workflow(job_id: str) -> dict[str, Any]:
        return service.v2_workflow(tenant_of(app), job_id)

    @app.post(
        "/v2/assets",
        summary="Upload an asset (Comfy API v2)",
        description="multipart/form-data: file, content_type, file_path, expected_hash (blake3:<hex>), tags.",
        tags=TAGS,
        responses={**ok(201, V2Asset, "The asset"), **v2_errors(400, 401, 403, 409, 413, 415)},
    )
    def upload() -> Response[dict[str, Any]]:
        form = form_body(app)
        file = form.get("file")
        if file is None or file.filename is None:
            raise Invalid("No file uploaded", type_="invalid_request", details="send the file in the form field 'file'")

        def text(name: str) -> str | None:
            field = form.get(name)
            return field.text if field is not None and field.text else None

        content_type = text("content_type") or "application/octet-stream"
        tags = [tag for tag in [text("tags")] if tag]
        body = service.asset_create(
            tenant_of(app), file.data, content_type, text("file_path") or file.filename, text("expected_hash"), tags
        )
        return Response(201, JSON, body)

    @app.post(
        "/v2/assets/from-hash",
        summary="An asset over bytes you uploaded (Comfy API v2)",
        tags=TAGS,
        responses={**ok(201, V2Asset, "The asset"), **v2_errors(400, 401, 403, 404)},
    )
    def from_hash() -> Response[dict[str, Any]]:
        request = parse(FromHash, raw_json(app))
        body = service.asset_from_hash(tenant_of(app), request.hash, request.file_path, request.tags)
        return Response(201, JSON, body)

    @app.route(
        "/v2/assets/by-hash/<hash_text>",
        method=["HEAD", "GET"],
        summary="Do you have these bytes? (Comfy API v2)",
        tags=TAGS,
        responses={200: {"description": "Yes"}, 404: {"description": "No"}, **v2_errors(400, 401, 403)},
    )
    def by_hash(hash_text: str) -> Response[str]:
        found = service.asset_exists(tenant_of(app), hash_text)
        return Response(200 if found else 404, content_types.TEXT_PLAIN, "")

    @app.get(
        "/v2/assets/<asset_id>",
        summary="An asset (Comfy API v2)",
        tags=TAGS,
        responses={**ok(200, V2Asset, "The asset"), **v2_errors(401, 403, 404)},
    )
    def get_asset(asset_id: str) -> dict[str, Any]:
        return service.asset(tenant_of(app), asset_id)

    @app.delete(
        "/v2/assets/<asset_id>",
        summary="Delete an asset (Comfy API v2)",
        tags=TAGS,
        responses={204: {"description": "Deleted"}, **v2_errors(401, 403, 404, 409)},
    )
    def delete_asset(asset_id: str) -> Response[str]:
        service.asset_delete(tenant_of(app), asset_id)
        return Response(204, content_types.TEXT_PLAIN, "")

    @app.get(
        "/v2/assets/<asset_id>/content",
        summary="An asset's bytes (Comfy API v2)",
        description="Honours a single bytes= Range (206); large assets redirect to a presigned URL.",
        tags=TAGS,
        responses={
            200: {"description": "The bytes", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
            206: {"description": "The requested range"},
            307: {"description": "Redirect to a presigned URL"},
            **v2_errors(401, 403, 404, 416),
        },
    )
    def content(asset_id: str) -> Response[str]:
        ref = service.asset_blob(tenant_of(app), asset_id)
        if ref.size > service.settings.view_inline_max_bytes:
            return Response(307, content_types.TEXT_PLAIN, "", headers={"Location": service.output_url(ref)})
        span = byte_range(app.current_event.headers.get("range"), ref.size)
        data = service.output_bytes(ref)
        headers = {"Accept-Ranges": "bytes"}
        if span is None:
            return binary_response(ref.content_type, data, headers)
        start, end = span
        response = binary_response(ref.content_type, data[start : end + 1], headers)
        response.status_code = 206
        response.headers["Content-Range"] = f"bytes {start}-{end}/{ref.size}"
        return response
