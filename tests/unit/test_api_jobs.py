"""The /v1 job routes over the local adapters (real SQLite, real files), driven by API Gateway REST events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobError, JobStatus, Progress
from comfyserve.engine.validation import validate_prompt
from comfyserve.ports import ReceivedMessage
from tests.api_stack import Stack, error_body, make_stack, output_ref, run_job, tiny_catalog, workflow


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


def submit(stack: Stack, body: dict[str, Any] | None = None, **kwargs: Any) -> str:
    response = stack.call("POST", "/v1/jobs", body=body or {"workflow": workflow()}, **kwargs)
    assert response.status == 202, response.json()
    return str(response.json()["job_id"])


def queued_messages(stack: Stack) -> list[ReceivedMessage]:
    return stack.queue.receive(max_messages=10)


def test_submit_stores_enqueues_and_publishes(stack: Stack) -> None:
    body = {"workflow": workflow(steps="20"), "metadata": {"order": 7}, "timeout_s": 60}
    response = stack.call("POST", "/v1/jobs", body=body)

    assert response.status == 202
    job_id = response.json()["job_id"]
    assert response.json() == {
        "job_id": job_id,
        "status": "queued",
        "links": {"self": f"/v1/jobs/{job_id}", "cancel": f"/v1/jobs/{job_id}/cancel"},
        "node_errors": {},
    }
    assert response.header("Location") == f"/v1/jobs/{job_id}"
    record = stack.jobs.get("tenant-a", job_id)
    assert record is not None and record.status is JobStatus.QUEUED
    stored: Any = record.workflow
    assert stored["3"]["inputs"]["steps"] == 20  # coerced as ComfyUI does
    assert record.timeout_s == 60 and record.metadata["order"] == 7
    assert record.metadata["comfyui"] == {"outputs": ["9"]}
    [message] = queued_messages(stack)
    assert message.message().job_id == job_id and message.message().tenant == "tenant-a"
    assert message.message().workflow_key is None
    [event] = stack.events.events()
    assert (event.type, event.job_id, event.tenant) == (JobEventType.JOB_QUEUED, job_id, "tenant-a")


def test_large_workflows_are_claim_checked(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, inline_workflow_bytes=100)
    job_id = submit(stack)

    record = stack.jobs.get("tenant-a", job_id)
    assert record is not None and record.workflow is None
    assert record.workflow_key == f"workflows/tenant-a/{job_id}/prompt.json"
    stored = json.loads(stack.blobs.get(record.workflow_key))
    assert stored == validate_prompt(workflow(), tiny_catalog().specs).prompt
    [message] = queued_messages(stack)
    assert message.message().workflow_key == record.workflow_key


def test_workflow_from_an_upload(stack: Stack) -> None:
    ticket = stack.call("POST", "/v1/uploads", body={"filename": "flow.json", "content_type": "application/json"})
    key = ticket.json()["key"]
    stack.blobs.put(key, json.dumps({"prompt": workflow()}).encode(), "application/json")

    job_id = submit(stack, {"workflow_key": key})

    record: Any = stack.jobs.get("tenant-a", job_id)
    assert record.workflow["9"]["class_type"] == "Save"


def test_invalid_workflow_is_a_comfyui_shaped_400_and_records_nothing(stack: Stack) -> None:
    bad = workflow(steps=0)
    response = stack.call("POST", "/v1/jobs", body={"workflow": bad})

    assert response.status == 400
    assert response.json() == validate_prompt(bad, tiny_catalog().specs).response()
    assert response.json()["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"
    assert stack.nothing_recorded()


def test_unknown_node_names_it(stack: Stack) -> None:
    response = stack.call("POST", "/v1/jobs", body={"workflow": {"1": {"class_type": "Nope", "inputs": {}}}})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_prompt", "Cannot execute because node Nope does not exist.", "Node ID '#1'"
    )


def test_an_empty_ui_format_workflow_is_refused_as_comfyui_refuses_no_outputs(stack: Stack) -> None:
    # The editor's format is converted (tests/unit/test_ui_workflow_entry.py); an empty one has no outputs.
    response = stack.call("POST", "/v1/jobs", body={"workflow": {"nodes": [], "links": []}})

    assert response.status == 400
    assert response.json() == error_body("prompt_no_outputs", "Prompt has no outputs", "")
    assert stack.jobs.list("tenant-a")[0] == []


def test_get_job_maps_progress_timings_and_error(stack: Stack) -> None:
    job_id = submit(stack)
    run_job(stack, job_id)
    stack.jobs.update_progress(job_id, Progress(node="3", step=4, max=20, nodes_done=1, nodes_total=3))

    running = stack.call("GET", f"/v1/jobs/{job_id}").json()

    assert running["status"] == "running" and running["started_at"] is not None
    assert running["progress"] == {"node": "3", "step": 4, "max": 20, "nodes_done": 1, "nodes_total": 3}
    error = JobError(type="execution_error", message="boom", node_id="3", node_type="Sampler")
    stack.jobs.transition(
        job_id,
        {JobStatus.RUNNING},
        JobStatus.FAILED,
        error=error,
        timings={"execution_s": 1.5, "per_node": {"3": 1.2}},
    )
    failed = stack.call("GET", f"/v1/jobs/{job_id}").json()
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "type": "execution_error",
        "message": "boom",
        "node_id": "3",
        "node_type": "Sampler",
    }
    assert failed["timings"] == {
        "queued_s": None,
        "cold_start_s": None,
        "execution_s": 1.5,
        "per_node": {"3": 1.2},
        "model_load_s": {},
    }
    assert "comfyui" not in failed["metadata"]


def test_get_job_gives_presigned_output_urls(stack: Stack) -> None:
    job_id = submit(stack)
    ref = output_ref("tenant-a", job_id)
    run_job(stack, job_id, outputs=[ref])

    view = stack.call("GET", f"/v1/jobs/{job_id}").json()

    [output] = view["outputs"]
    assert {k: output[k] for k in ("node_id", "filename", "content_type", "size")} == {
        "node_id": "9",
        "filename": "ComfyUI_00001_.png",
        "content_type": "image/png",
        "size": 64,
    }
    url = urlsplit(output["url"])
    query = parse_qs(url.query)
    assert url.path == f"/v1/blobs/{ref.key}"
    stack.blobs.signer.verify("GET", ref.key, query["expires"][0], query["sig"][0])  # raises if not signed


def test_list_pages_filters_and_stays_within_the_tenant(stack: Stack) -> None:
    ids = [submit(stack) for _ in range(3)]
    submit(stack, tenant="tenant-b")
    run_job(stack, ids[0])

    first = stack.call("GET", "/v1/jobs?limit=2").json()
    second = stack.call("GET", f"/v1/jobs?limit=2&cursor={first['next_cursor']}").json()
    running = stack.call("GET", "/v1/jobs?status=running").json()

    assert [job["job_id"] for job in first["jobs"] + second["jobs"]] == ids[::-1]
    assert second["next_cursor"] is None
    assert [job["job_id"] for job in running["jobs"]] == [ids[0]]


@pytest.mark.parametrize(
    ("query", "details"),
    [
        (
            "status=sleeping",
            "query.status: Input should be 'queued', 'running', 'succeeded', 'failed' or 'cancelled'",
        ),
        ("limit=0", "query.limit: Input should be greater than or equal to 1"),
        ("limit=abc", "query.limit: Input should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_list_rejects_bad_queries(stack: Stack, query: str, details: str) -> None:
    response = stack.call("GET", f"/v1/jobs?{query}")

    assert response.status == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert response.json()["error"]["details"] == details


def test_list_rejects_a_foreign_cursor(stack: Stack) -> None:
    for _ in range(2):
        submit(stack, tenant="tenant-b")
    cursor = stack.call("GET", "/v1/jobs?limit=1", tenant="tenant-b").json()["next_cursor"]

    response = stack.call("GET", f"/v1/jobs?cursor={cursor}")

    assert response.status == 400
    assert response.json() == error_body("invalid_cursor", "Invalid cursor", "pass a cursor from a previous page")


def test_cancel_queued_job_never_runs(stack: Stack) -> None:
    job_id = submit(stack)

    response = stack.call("POST", f"/v1/jobs/{job_id}/cancel")

    assert response.status == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"] is not None
    assert [e.type for e in stack.events.events(job_id)] == [
        JobEventType.JOB_QUEUED,
        JobEventType.JOB_CANCELLED,
    ]
    with pytest.raises(Exception, match="cancelled"):  # the worker's claim fails: it never runs
        stack.jobs.transition(job_id, {JobStatus.QUEUED}, JobStatus.RUNNING)


def test_cancel_running_job_requests_an_interrupt(stack: Stack) -> None:
    job_id = submit(stack)
    run_job(stack, job_id)

    response = stack.call("POST", f"/v1/jobs/{job_id}/cancel")

    assert response.status == 202
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True
    record = stack.jobs.get("tenant-a", job_id)
    assert record is not None and record.cancel_requested


def test_cancel_finished_job_is_a_conflict(stack: Stack) -> None:
    job_id = submit(stack)
    run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])

    response = stack.call("POST", f"/v1/jobs/{job_id}/cancel")

    assert response.status == 409
    assert response.json() == error_body(
        "job_finished",
        "Job already finished",
        f"job {job_id} is succeeded; there is nothing to cancel",
        {"status": "succeeded"},
    )


@pytest.mark.parametrize("job_id", ["0123456789abcdef", "bad.id!", "x" * 65])
def test_unknown_job_is_404(stack: Stack, job_id: str) -> None:
    for method, url in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel")):
        response = stack.call(method, url)
        assert response.status == 404
        assert response.json() == error_body("job_not_found", "Job not found", f"no job {job_id!r}")


def test_another_tenants_job_is_404(stack: Stack) -> None:
    job_id = submit(stack, tenant="tenant-b")

    for method, url in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel")):
        response = stack.call(method, url)
        assert response.status == 404
        assert response.json() == error_body("job_not_found", "Job not found", f"no job {job_id!r}")
    record = stack.jobs.get("tenant-b", job_id)
    assert record is not None and record.status is JobStatus.QUEUED


def test_idempotency_same_key_same_body_returns_the_original(stack: Stack) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = stack.call("POST", "/v1/jobs", body={"workflow": workflow()}, headers=headers)
    # The same body with keys in another order and other whitespace is the same request.
    again_body = json.dumps({"workflow": dict(reversed(workflow().items()))}, indent=2)
    again = stack.call("POST", "/v1/jobs", body=again_body, headers={**headers, "Content-Type": "application/json"})

    assert first.status == again.status == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.header("Idempotent-Replayed") == "true"
    assert len(stack.jobs.list("tenant-a")[0]) == 1
    assert len(queued_messages(stack)) == 1


def test_idempotency_same_key_other_body_is_409(stack: Stack) -> None:
    headers = {"idempotency-key": "order-42"}
    job_id = submit(stack, headers=headers)

    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow(seed=6)}, headers=headers)

    assert response.status == 409
    assert response.json() == error_body(
        "idempotency_key_reused",
        "Idempotency-Key reused with a different request",
        f"the key 'order-42' was first used for another request body (job {job_id})",
        {"job_id": job_id},
    )
    assert len(stack.jobs.list("tenant-a")[0]) == 1 and len(queued_messages(stack)) == 1


def test_idempotency_keys_are_per_tenant(stack: Stack) -> None:
    headers = {"Idempotency-Key": "same"}
    assert submit(stack, headers=headers) != submit(stack, headers=headers, tenant="tenant-b")


def test_backlog_over_the_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, max_backlog=1, backlog_cache_s=0, retry_after_s=7)
    submit(stack)

    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow()})

    assert response.status == 429
    assert response.header("Retry-After") == "7"
    assert response.json() == error_body(
        "backlog_full",
        "Too many jobs are waiting; retry later",
        "about 1 jobs are queued or running, the limit is 1",
        {"retry_after": 7},
    )
    assert len(stack.jobs.list("tenant-a")[0]) == 1 and len(queued_messages(stack)) == 1


def test_oversized_body_is_413_and_records_nothing(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, max_body_bytes=1000)
    body = {"workflow": workflow(), "metadata": {"pad": "x" * 1000}}

    response = stack.call("POST", "/v1/jobs", body=body)

    size = len(json.dumps(body))
    assert response.status == 413
    assert response.json() == error_body(
        "payload_too_large", "Request body too large", f"{size} bytes, the limit is 1000 bytes"
    )
    assert stack.nothing_recorded()


def test_not_json_is_400_with_the_reason(stack: Stack) -> None:
    response = stack.call("POST", "/v1/jobs", body="{not json", headers={"Content-Type": "application/json"})

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_json", "Request body is not valid JSON", "Expecting property name enclosed in double quotes"
    )
    assert stack.nothing_recorded()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_wrong_content_type_is_415(stack: Stack, content_type: str) -> None:
    body = json.dumps({"workflow": workflow()})

    response = stack.call("POST", "/v1/jobs", body=body, headers={"Content-Type": content_type})

    assert response.status == 415
    assert response.json() == error_body(
        "unsupported_media_type", "Unsupported content type", f"send application/json, not {content_type}"
    )
    assert stack.nothing_recorded()


@pytest.mark.parametrize(
    ("body", "details", "loc"),
    [
        ({"workflow": {}, "colour": 1}, "body.colour: Extra inputs are not permitted", ["body", "colour"]),
        (
            {"workflow": {}, "workflow_key": "uploads/tenant-a/x"},
            "body: Value error, give exactly one of workflow or workflow_key",
            ["body"],
        ),
        (
            {"workflow": {}, "timeout_s": 0},
            "body.timeout_s: Input should be greater than 0",
            ["body", "timeout_s"],
        ),
    ],
)
def test_request_shape_errors_name_the_field(stack: Stack, body: dict[str, Any], details: str, loc: list[str]) -> None:
    response = stack.call("POST", "/v1/jobs", body=body)

    assert response.status == 400
    error = response.json()["error"]
    assert (error["type"], error["message"], error["details"]) == (
        "invalid_request",
        "Invalid request",
        details,
    )
    assert [item["loc"] for item in error["extra_info"]["errors"]] == [loc]
    assert stack.nothing_recorded()


def test_reserved_metadata_key_is_refused(stack: Stack) -> None:
    response = stack.call("POST", "/v1/jobs", body={"workflow": workflow(), "metadata": {"comfyui": {}}})

    assert response.status == 400
    assert response.json()["error"]["details"] == "body.metadata: Value error, the metadata key 'comfyui' is reserved"


def test_private_webhook_is_refused(stack: Stack) -> None:
    body = {"workflow": workflow(), "webhook": {"url": "http://10.0.0.5/hook"}}

    response = stack.call("POST", "/v1/jobs", body=body)

    assert response.status == 400
    assert response.json() == error_body(
        "invalid_webhook", "Webhook URL refused", "10.0.0.5 resolves to non-public address 10.0.0.5"
    )
    assert stack.nothing_recorded()


def test_validate_records_nothing(stack: Stack) -> None:
    good = stack.call("POST", "/v1/validate", body={"workflow": {"prompt": workflow()}})
    bad = stack.call("POST", "/v1/validate", body={"workflow": workflow(sampler_name="lms")})

    assert good.status == 200 and good.json() == {
        "ok": True,
        "outputs": ["9"],
        "error": None,
        "node_errors": {},
    }
    assert bad.status == 200 and bad.json()["ok"] is False
    assert bad.json()["node_errors"]["3"]["errors"][0]["type"] == "value_not_in_list"
    assert stack.nothing_recorded()


def test_nodes_is_the_catalog(stack: Stack) -> None:
    response = stack.call("GET", "/v1/nodes")

    assert response.status == 200 and response.json() == tiny_catalog().to_object_info()


def test_upload_gives_a_presigned_put_in_the_tenants_folder(stack: Stack) -> None:
    response = stack.call("POST", "/v1/uploads", body={"filename": "../../my cat.png", "content_type": "image/png"})

    assert response.status == 201
    ticket = response.json()
    assert ticket["key"].startswith("uploads/tenant-a/") and ticket["key"].endswith("/my_cat.png")
    assert (ticket["method"], ticket["headers"], ticket["expires_in"]) == (
        "PUT",
        {"Content-Type": "image/png"},
        900,
    )
    query = parse_qs(urlsplit(ticket["url"]).query)
    stack.blobs.signer.verify("PUT", ticket["key"], query["expires"][0], query["sig"][0], "image/png")


def test_health_needs_no_key(stack: Stack) -> None:
    response = stack.call("GET", "/v1/health", tenant=None)

    assert response.status == 200 and response.json() == {"status": "ok", "nodes": 8}


def test_api_prefix_and_unknown_routes(stack: Stack) -> None:
    assert stack.call("GET", "/api/v1/health").status == 200
    response = stack.call("GET", "/v3/things")
    assert response.status == 404
    assert response.json() == error_body("no_route", "Not found", "GET /v3/things")
