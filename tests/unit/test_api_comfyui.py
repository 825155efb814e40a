"""ComfyUI's own routes over the job service, called as ComfyUI's clients call them, per tenant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyserve.api.auth import HOW_TO_SEND
from comfyserve.contracts.jobs import JobError, JobStatus, OutputRef
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.validation import validate_prompt
from comfyserve.service.history import prompt_number, stored_job_id
from tests.api_stack import Stack, error_body, make_stack, output_ref, run_job, tiny_catalog, workflow

# urllib.request sends a POST body as application/x-www-form-urlencoded unless told otherwise; ComfyUI's
# example scripts rely on the server reading JSON regardless.
URLLIB = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


def post_prompt(stack: Stack, document: dict[str, Any], prefix: str = "", **kwargs: Any) -> Any:
    return stack.call("POST", f"{prefix}/prompt", body=json.dumps(document), headers=URLLIB, **kwargs)


def queue_prompt(stack: Stack, **kwargs: Any) -> str:
    response = post_prompt(stack, {"prompt": workflow()}, **kwargs)
    assert response.status == 200, response.json()
    return str(response.json()["prompt_id"])


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_post_prompt_as_comfyui_clients_send_it(stack: Stack, prefix: str) -> None:
    document = {
        "prompt": workflow(),
        "client_id": "client-1",
        "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}, "api_key_comfy_org": "secret"},
    }

    response = post_prompt(stack, document, prefix)

    assert response.status == 200
    body = response.json()
    record = stack.jobs.get("tenant-a", body["prompt_id"])
    assert record is not None and record.status is JobStatus.QUEUED
    assert body == {"prompt_id": record.job_id, "number": prompt_number(record), "node_errors": {}}
    extra_key = f"workflows/tenant-a/{record.job_id}/extra_data.json"
    assert record.metadata["comfyui"] == {
        "client_id": "client-1",
        "outputs": ["9"],
        "extra_data_key": extra_key,
    }
    assert json.loads(stack.blobs.get(extra_key)) == {"extra_pnginfo": {"workflow": {"nodes": []}}}
    assert stack.queue.approximate_depth().visible == 1


def test_missing_prompt_is_comfyuis_no_prompt_error(stack: Stack) -> None:
    response = post_prompt(stack, {"client_id": "x"})

    assert response.status == 400
    assert response.json() == {
        "error": {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        },
        "node_errors": {},
    }
    assert stack.nothing_recorded()


def test_invalid_prompt_is_comfyuis_400(stack: Stack) -> None:
    bad = workflow(ckpt_missing=1)
    bad["4"]["inputs"] = {}

    response = post_prompt(stack, {"prompt": bad})

    assert response.status == 400
    assert response.json() == validate_prompt(bad, tiny_catalog().specs).response()
    assert response.json()["node_errors"]["4"]["errors"][0]["type"] == "required_input_missing"
    assert stack.nothing_recorded()


def test_partly_valid_prompt_runs_its_valid_outputs_as_comfyui_does(stack: Stack) -> None:
    graph = workflow()
    graph["8"] = {"class_type": "Save", "inputs": {"images": ["404", 0], "filename_prefix": "x"}}

    response = post_prompt(stack, {"prompt": graph})

    assert response.status == 200
    assert list(response.json()["node_errors"]) == ["8"]
    record = stack.jobs.get("tenant-a", response.json()["prompt_id"])
    assert record is not None and record.metadata["comfyui"] == {"outputs": ["9"]}


def test_prompt_id_is_honoured_once(stack: Stack) -> None:
    extra = {"extra_pnginfo": {"workflow": {"first": True}}}
    first = post_prompt(stack, {"prompt": workflow(), "prompt_id": "my-prompt-1", "extra_data": extra})
    again = post_prompt(
        stack, {"prompt": workflow(), "prompt_id": "my-prompt-1", "extra_data": {"extra_pnginfo": {"x": 1}}}
    )
    bad = post_prompt(stack, {"prompt": workflow(), "prompt_id": "no/slashes"})

    assert first.status == 200 and first.json()["prompt_id"] == "my-prompt-1"
    assert again.status == 409
    assert again.json() == error_body("job_exists", "Job id already in use", "job my-prompt-1 exists")
    # the refused request touched none of the first job's claim checks
    stored = stored_job_id("tenant-a", "my-prompt-1")
    assert json.loads(stack.blobs.get(f"workflows/tenant-a/{stored}/extra_data.json")) == extra
    assert bad.status == 400
    assert bad.json() == error_body("invalid_prompt_id", "Invalid prompt_id", "use 1-64 letters, digits, '-' or '_'")
    assert [r.job_id for r in stack.jobs.list("tenant-a", limit=10)[0]] == [stored]
    assert stack.queue.approximate_depth().visible == 1


def test_another_tenants_prompt_id_is_its_own_job(stack: Stack) -> None:
    mine = post_prompt(stack, {"prompt": workflow(), "prompt_id": "shared-1"})
    theirs = post_prompt(stack, {"prompt": workflow(), "prompt_id": "shared-1"}, tenant="tenant-b")
    a_id, b_id = stored_job_id("tenant-a", "shared-1"), stored_job_id("tenant-b", "shared-1")
    record_b = stack.jobs.get("tenant-b", b_id)

    assert mine.status == theirs.status == 200
    assert record_b is not None and a_id != b_id
    assert theirs.json() == {"prompt_id": "shared-1", "number": prompt_number(record_b), "node_errors": {}}
    assert record_b.metadata["comfyui"] == {"outputs": ["9"], "prompt_id": "shared-1"}
    assert stack.jobs.get("tenant-b", a_id) is None and stack.jobs.get("tenant-a", b_id) is None
    assert stack.queue.approximate_depth().visible == 2
    assert stack.call("GET", "/history/shared-1", tenant="tenant-b").json() == {}  # queued, not finished

    [pending] = stack.call("GET", "/queue", tenant="tenant-b").json()["queue_pending"]
    assert pending[:2] == [prompt_number(record_b), "shared-1"]
    run_job(stack, b_id, outputs=[output_ref("tenant-b", b_id)])
    history = stack.call("GET", "/history", tenant="tenant-b").json()
    entry = stack.call("GET", "/history/shared-1", tenant="tenant-b").json()
    jobs = stack.call("GET", "/api/jobs", tenant="tenant-b").json()["jobs"]
    job = stack.call("GET", "/api/jobs/shared-1", tenant="tenant-b").json()

    assert list(history) == list(entry) == ["shared-1"]
    assert entry["shared-1"]["prompt"][1] == "shared-1"
    image = {"filename": "ComfyUI_00001_.png", "subfolder": "shared-1", "type": "output"}
    assert entry["shared-1"]["outputs"] == {"9": {"images": [image]}}
    assert {m[1]["prompt_id"] for m in entry["shared-1"]["status"]["messages"]} == {"shared-1"}
    assert [j["id"] for j in jobs] == [job["id"]] == ["shared-1"]
    view = stack.call("GET", "/view?filename=ComfyUI_00001_.png&subfolder=shared-1&type=output", tenant="tenant-b")
    assert view.status == 200
    # tenant A's job is untouched, and A's views of the id are A's own job
    record_a = stack.jobs.get("tenant-a", a_id)
    assert record_a is not None and record_a.status is JobStatus.QUEUED
    assert stack.call("GET", "/history/shared-1").json() == {}
    assert stack.call("GET", "/api/jobs/shared-1").json()["status"] == "pending"


def test_a_prompt_id_the_tenant_never_used_has_no_history(stack: Stack) -> None:
    mine = post_prompt(stack, {"prompt": workflow(), "prompt_id": "only-a"})
    chosen = stored_job_id("tenant-a", "only-a")
    run_job(stack, chosen, outputs=[output_ref("tenant-a", chosen)])

    assert mine.status == 200 and list(stack.call("GET", "/history/only-a").json()) == ["only-a"]
    assert stack.call("GET", "/history/only-a", tenant="tenant-b").json() == {}
    assert stack.call("GET", f"/history/{chosen}", tenant="tenant-b").json() == {}
    assert stack.call("GET", "/api/jobs/only-a", tenant="tenant-b").status == 404
    cancelled = stack.call("POST", "/api/jobs/only-a/cancel", tenant="tenant-b")
    assert cancelled.json() == {"id": "only-a", "status": "unknown"}


def test_cancel_delete_and_interrupt_name_the_chosen_prompt_id(stack: Stack) -> None:
    for prompt_id in ("run-me", "drop-me", "cancel-me"):
        post_prompt(stack, {"prompt": workflow(), "prompt_id": prompt_id}, tenant="tenant-b")
        post_prompt(stack, {"prompt": workflow(), "prompt_id": prompt_id})  # tenant A's, same ids
    run_job(stack, stored_job_id("tenant-b", "run-me"))

    stack.call("POST", "/interrupt", body={"prompt_id": "run-me"}, tenant="tenant-b")
    stack.call("POST", "/queue", body={"delete": ["drop-me"]}, tenant="tenant-b")
    cancel = stack.call("POST", "/api/jobs/cancel-me/cancel", tenant="tenant-b").json()

    def state(tenant: str, prompt_id: str) -> tuple[JobStatus, bool]:
        record = stack.jobs.get(tenant, stored_job_id(tenant, prompt_id))
        assert record is not None
        return record.status, record.cancel_requested

    assert cancel == {"id": "cancel-me", "status": "cancelled"}
    assert state("tenant-b", "run-me") == (JobStatus.RUNNING, True)
    assert state("tenant-b", "drop-me") == (JobStatus.CANCELLED, False)
    assert [state("tenant-a", p) for p in ("run-me", "drop-me", "cancel-me")] == [(JobStatus.QUEUED, False)] * 3


def test_queue_and_prompt_show_only_the_tenants_work(stack: Stack) -> None:
    running = queue_prompt(stack)
    pending = queue_prompt(stack)
    queue_prompt(stack, tenant="tenant-b")
    run_job(stack, running)

    queue = stack.call("GET", "/queue").json()
    remaining = stack.call("GET", "/prompt").json()

    assert [item[1] for item in queue["queue_running"]] == [running]
    [item] = queue["queue_pending"]
    record = stack.jobs.get("tenant-a", pending)
    assert record is not None
    assert item == [prompt_number(record), pending, record.workflow, {}, ["9"]]
    assert remaining == {"exec_info": {"queue_remaining": 2}}


def test_post_queue_deletes_pending_prompts_only(stack: Stack) -> None:
    running, first, second, third = (queue_prompt(stack) for _ in range(4))
    run_job(stack, running)

    deleted = stack.call("POST", "/queue", body=json.dumps({"delete": [first, running, "unknown"]}), headers=URLLIB)
    status_after_delete = {job_id: stack.service.get("tenant-a", job_id).status for job_id in (running, first, second)}
    cleared = stack.call("POST", "/queue", body={"clear": True})

    assert (deleted.status, deleted.body, cleared.status) == (200, b"", 200)
    assert status_after_delete == {
        running: JobStatus.RUNNING,
        first: JobStatus.CANCELLED,
        second: JobStatus.QUEUED,
    }
    assert stack.service.get("tenant-a", second).status is JobStatus.CANCELLED
    assert stack.service.get("tenant-a", third).status is JobStatus.CANCELLED
    assert stack.service.get("tenant-a", running).status is JobStatus.RUNNING


def test_interrupt_flags_running_prompts(stack: Stack) -> None:
    one, two, queued = (queue_prompt(stack) for _ in range(3))
    other = queue_prompt(stack, tenant="tenant-b")
    for job_id in (one, two):
        run_job(stack, job_id)
    run_job(stack, other)

    targeted = stack.call("POST", "/interrupt", body={"prompt_id": one})
    flags_after_targeted = [stack.service.get("tenant-a", j).cancel_requested for j in (one, two)]
    everything = stack.call("POST", "/api/interrupt", body=b"", headers=URLLIB)

    assert targeted.status == everything.status == 200
    assert flags_after_targeted == [True, False]
    assert stack.service.get("tenant-a", two).cancel_requested
    assert stack.service.get("tenant-a", queued).status is JobStatus.QUEUED
    assert not stack.service.get("tenant-b", other).cancel_requested


def test_history_entry_in_comfyuis_shape(stack: Stack) -> None:
    job_id = queue_prompt(stack)
    assert stack.call("GET", f"/history/{job_id}").json() == {}  # not finished yet
    ref = output_ref("tenant-a", job_id, "sub/ComfyUI_00001_.png")
    run_job(stack, job_id, outputs=[ref])
    record = stack.service.get("tenant-a", job_id)
    assert record.started_at is not None and record.finished_at is not None
    started, finished = (int(t.timestamp() * 1000) for t in (record.started_at, record.finished_at))

    entry = stack.call("GET", f"/api/history/{job_id}").json()

    assert entry == {
        job_id: {
            "prompt": [prompt_number(record), job_id, record.workflow, {}, ["9"]],
            "outputs": {
                "9": {"images": [{"filename": "ComfyUI_00001_.png", "subfolder": f"{job_id}/sub", "type": "output"}]}
            },
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": [
                    ["execution_start", {"prompt_id": job_id, "timestamp": started}],
                    ["execution_cached", {"nodes": [], "prompt_id": job_id, "timestamp": started}],
                    ["execution_success", {"prompt_id": job_id, "timestamp": finished}],
                ],
            },
            "meta": {"9": {"node_id": "9", "display_node": "9", "parent_node": None, "real_node_id": "9"}},
        }
    }
    assert stack.call("GET", f"/history/{job_id}", tenant="tenant-b").json() == {}


def test_failed_prompt_history_carries_the_error(stack: Stack) -> None:
    job_id = queue_prompt(stack)
    run_job(
        stack,
        job_id,
        error=JobError(type="execution_error", message="boom", node_id="3", node_type="Sampler"),
    )

    status = stack.call("GET", f"/history/{job_id}").json()[job_id]["status"]

    assert (status["status_str"], status["completed"]) == ("error", False)
    kind, data = status["messages"][-1]
    assert kind == "execution_error"
    assert {k: data[k] for k in ("node_id", "node_type", "exception_message", "exception_type")} == {
        "node_id": "3",
        "node_type": "Sampler",
        "exception_message": "boom",
        "exception_type": "execution_error",
    }


def test_history_lists_the_last_finished_oldest_first(stack: Stack) -> None:
    ids = [queue_prompt(stack) for _ in range(4)]
    for job_id in ids[:3]:
        run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])

    history = stack.call("GET", "/history?max_items=2").json()

    assert list(history) == ids[1:3]
    assert stack.call("GET", "/history?max_items=0").status == 400


def test_history_paging_follows_comfyui(stack: Stack) -> None:
    ids = [queue_prompt(stack) for _ in range(4)]
    for job_id in ids:
        run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])

    def page(query: str) -> list[str]:
        return list(stack.call("GET", f"/history{query}").json())

    assert page("") == ids
    assert page("?offset=0") == page("")  # offset 0 is no offset
    assert page("?offset=1") == ids[1:]  # offset skips the oldest; without max_items the remainder
    assert page("?offset=4") == [] and page("?offset=9") == []
    assert page("?offset=1&max_items=2") == ids[1:3]  # max_items caps the window
    assert page("?max_items=3") == ids[1:]  # max_items alone: the last ones
    assert stack.call("GET", "/history?offset=-2").status == 400


def test_view_serves_the_output_bytes(stack: Stack) -> None:
    job_id = queue_prompt(stack)
    ref = output_ref("tenant-a", job_id, "sub/ComfyUI_00001_.png")
    run_job(stack, job_id, outputs=[ref])

    response = stack.call("GET", f"/view?filename=ComfyUI_00001_.png&subfolder={job_id}/sub&type=output")

    assert response.status == 200
    assert response.header("Content-Type") == "image/png"
    assert response.body == stack.blobs.get(ref.key)


def test_a_preview_is_listed_as_temp_and_view_serves_it(stack: Stack) -> None:
    job_id = queue_prompt(stack)
    ref = output_ref("tenant-a", job_id, "ComfyUI_temp_abcde_00001_.png").model_copy(update={"type": "temp"})
    run_job(stack, job_id, outputs=[ref])

    images = stack.call("GET", f"/history/{job_id}").json()[job_id]["outputs"]["9"]["images"]
    response = stack.call("GET", f"/view?filename=ComfyUI_temp_abcde_00001_.png&subfolder={job_id}&type=temp")

    assert images == [{"filename": "ComfyUI_temp_abcde_00001_.png", "subfolder": job_id, "type": "temp"}]
    assert response.status == 200 and response.body == stack.blobs.get(ref.key)
    stored = ref.model_dump(mode="json")
    del stored["type"]  # a record written before outputs carried their folder type
    assert OutputRef.model_validate(stored).type == "output"


def test_view_redirects_large_outputs(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, view_inline_max_bytes=10)
    job_id = queue_prompt(stack)
    run_job(stack, job_id, outputs=[output_ref("tenant-a", job_id)])

    response = stack.call("GET", f"/view?filename=ComfyUI_00001_.png&subfolder={job_id}")

    assert response.status == 307
    assert (response.header("Location") or "").startswith(f"http://127.0.0.1:8188/v1/blobs/outputs/tenant-a/{job_id}/")


@pytest.mark.parametrize(
    ("query", "details"),
    [
        ("filename=../../etc/passwd", "'..' and '/' are not allowed in a filename"),
        ("filename=a.png&subfolder=job/../other", "'..' and '/' are not allowed in a filename"),
        ("filename=/etc/passwd", "absolute paths are not allowed"),
        ("filename=a.png&subfolder=/abs", "absolute paths are not allowed"),
    ],
)
def test_view_rejects_escaping_names(stack: Stack, query: str, details: str) -> None:
    response = stack.call("GET", f"/view?{query}")

    assert response.status == 400
    assert response.json() == error_body("invalid_view", "Invalid filename", details)


def test_view_of_another_tenants_output_is_404(stack: Stack) -> None:
    job_id = queue_prompt(stack, tenant="tenant-b")
    run_job(stack, job_id, outputs=[output_ref("tenant-b", job_id)])

    response = stack.call("GET", f"/view?filename=ComfyUI_00001_.png&subfolder={job_id}&type=output")

    assert response.status == 404
    assert response.json() == error_body("job_not_found", "Job not found", f"no job {job_id!r}")


def test_object_info(stack: Stack) -> None:
    everything = stack.call("GET", "/object_info").json()
    one = stack.call("GET", "/api/object_info/Save").json()
    unknown = stack.call("GET", "/object_info/Nope").json()

    assert everything == tiny_catalog().to_object_info()
    assert one == {"Save": everything["Save"]}
    assert unknown == {}


@pytest.mark.parametrize(("method", "url"), [("GET", "/queue"), ("GET", "/history"), ("POST", "/prompt")])
def test_comfyui_routes_need_a_key(stack: Stack, method: str, url: str) -> None:
    response = stack.call(method, url, tenant=None, body=json.dumps({"prompt": workflow()}), headers=URLLIB)

    assert response.status == 401
    assert response.json() == error_body("unauthorized", "Missing API key", HOW_TO_SEND)
    assert stack.nothing_recorded()


def test_object_info_keeps_comfyuis_input_order(tmp_path: Path) -> None:
    """Positional clients (comfy-script) and ComfyUI's widgets read the inputs in declaration order."""
    packaged = Catalog.packaged().to_object_info()["KSampler"]
    declared = [
        "model",
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "positive",
        "negative",
        "latent_image",
        "denoise",
    ]

    assert list(packaged["input"]["required"]) == declared
    assert packaged["input_order"]["required"] == declared
    reordered = {**packaged, "input": {"required": dict(sorted(packaged["input"]["required"].items()))}}
    spec = Catalog.from_object_info({"KSampler": reordered}).specs["KSampler"]
    assert list(spec.inputs) == declared
