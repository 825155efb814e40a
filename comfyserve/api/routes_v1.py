"""The service's own routes: ``/v1/jobs``, ``/v1/validate``, ``/v1/nodes``, ``/v1/uploads``, ``/v1/health``

A route that knows the request's job (submit, get, cancel) puts ``job_id`` in the resolver's context (cleared
after each request); the Lambda ``api`` handler adds it to its log lines.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query

from comfyserve.api.docs import AUTH_ERRORS as AUTH
from comfyserve.api.docs import JSON, error_responses, ok
from comfyserve.api.gate import tenant_of
from comfyserve.api.models import Health, JobAccepted, JobList, JobView, UploadView, ValidationView
from comfyserve.contracts.jobs import JobRecord, JobStatus
from comfyserve.service.errors import NotFound
from comfyserve.service.job_service import JobService
from comfyserve.service.jobs import PAGE_LIMIT
from comfyserve.service.models import JobSubmission, UploadRequest, ValidateRequest


def register(app: APIGatewayRestResolver, service: JobService) -> None:
    def view(record: JobRecord) -> JobView:
        return JobView.of(record, service.output_url)

    @app.post(
        "/v1/jobs",
        summary="Submit a job",
        description="Validates the workflow, stores it with its inputs and queues it. With an "
        "Idempotency-Key, the same key and body return the original job; another body is a 409.",
        tags=["jobs"],
        responses={
            **ok(202, JobAccepted, "Queued"),
            **error_responses(400, *AUTH, 409, 415, 429, 503),
        },
    )
    def submit_job(
        body: Annotated[JobSubmission, Body(description="The workflow, its inputs and options.")],
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", description="Makes retries safe.")
        ] = None,
    ) -> Response[JobAccepted]:
        submitted = service.submit(tenant_of(app), body, idempotency_key)
        job_id = submitted.record.job_id
        app.append_context(job_id=job_id)
        headers = {"Location": f"/v1/jobs/{job_id}"}
        if submitted.replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(202, JSON, JobAccepted.of(submitted), headers=headers)

    @app.get(
        "/v1/jobs/<job_id>",
        summary="Get a job",
        description="Status, progress, timings, outputs (with presigned URLs) and error.",
        tags=["jobs"],
        responses={**ok(200, JobView, "The job"), **error_responses(*AUTH, 404)},
    )
    def get_job(job_id: str) -> JobView:
        app.append_context(job_id=job_id)
        return view(service.get(tenant_of(app), job_id))

    @app.get(
        "/v1/jobs",
        summary="List your jobs",
        description="Newest first, a page at a time.",
        tags=["jobs"],
        responses={**ok(200, JobList, "A page of jobs"), **error_responses(400, *AUTH)},
    )
    def list_jobs(
        status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT, description="Page size.")] = 50,
        cursor: Annotated[str | None, Query(max_length=2048, description="From the previous page.")] = None,
    ) -> JobList:
        records, next_cursor = service.list_jobs(tenant_of(app), status=status, limit=limit, cursor=cursor)
        return JobList(jobs=[view(record) for record in records], next_cursor=next_cursor)

    @app.post(
        "/v1/jobs/<job_id>/cancel",
        summary="Cancel a job",
        description="A queued job is cancelled at once (200) and never runs; a running one is interrupted by "
        "its worker (202, cancel_requested); a finished one is a 409.",
        tags=["jobs"],
        responses={
            **ok(200, JobView, "Cancelled"),
            **ok(202, JobView, "Cancellation requested"),
            **error_responses(*AUTH, 404, 409),
        },
    )
    def cancel_job(job_id: str) -> Response[JobView]:
        app.append_context(job_id=job_id)
        record = service.cancel(tenant_of(app), job_id)
        return Response(200 if record.status is JobStatus.CANCELLED else 202, JSON, view(record))

    @app.post(
        "/v1/validate",
        summary="Validate a workflow",
        description="Checks a workflow against the node catalog (and the model inventory); records nothing.",
        tags=["workflows"],
        responses={**ok(200, ValidationView, "The result, valid or not"), **error_responses(400, *AUTH, 415)},
    )
    def validate(body: Annotated[ValidateRequest, Body()]) -> ValidationView:
        result = service.validate(body)
        return ValidationView(ok=result.ok, outputs=result.outputs, error=result.error, node_errors=result.node_errors)

    @app.get(
        "/v1/nodes",
        summary="The node catalog",
        description="Every node's inputs and outputs, in ComfyUI's /object_info shape.",
        tags=["workflows"],
        responses=error_responses(*AUTH),
    )
    def nodes() -> dict[str, Any]:
        return service.object_info()

    @app.post(
        "/v1/uploads",
        summary="Upload an input file",
        description="Returns a presigned URL to PUT the file to; name the returned key as an input.",
        tags=["inputs"],
        responses={**ok(201, UploadView, "Where to PUT the file"), **error_responses(400, *AUTH, 415)},
    )
    def create_upload(body: Annotated[UploadRequest, Body()]) -> Response[UploadView]:
        return Response(201, JSON, UploadView.of(service.create_upload(tenant_of(app), body)))

    @app.get(
        "/v1/metrics",
        summary="Worker figures",
        description="Figures of the caller's own jobs, per metric (QueueWait, ColdStart, Execution, NodeTime, "
        "ModelLoad<Tier>, Jobs<Outcome>): unit, count, sum, min, max, mean; and its jobs in flight. The local "
        "stack's; the cloud's are in CloudWatch (namespace comfyserve), so there this is a 404.",
        tags=["service"],
        responses=error_responses(*AUTH, 404),
    )
    def metrics() -> dict[str, Any]:
        if service.deps.metrics is None:
            raise NotFound("worker metrics are in CloudWatch here (namespace comfyserve)")
        return service.deps.metrics(tenant_of(app))

    @app.get("/v1/health", summary="Health check", description="No API key needed.", tags=["service"])
    def health() -> Health:
        catalog = service.deps.catalog
        return Health(status="starting" if catalog.starting else "ok", nodes=len(catalog))
