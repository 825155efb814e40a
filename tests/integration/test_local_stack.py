"""The local stack over real HTTP: one stack (server + 2 spawned workers) for the module, on a free loopback
port. Submit → succeeded with downloadable outputs, uploads, cancellation of queued and running jobs, a worker
killed mid-job (the job re-runs elsewhere onto the same keys), killed workers replaced by the stack's supervisor,
and SIGTERM drain."""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from comfyserve.commands import submit
from comfyserve.contracts.events import JobEventType
from comfyserve.localstack.stack import LocalStack
from tests.integration.stack_helpers import IMAGE_PACKS, STACK_NODES, Api, image_only, wait_for, wait_workflow

KEYS = {"alice": "alice-key", "bob": "bob-key", "carol": "carol-key"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    data_dir = tmp_path_factory.mktemp("stack")
    with LocalStack(
        data_dir,
        port=0,
        workers=2,
        api_keys=KEYS,
        custom_nodes=[STACK_NODES],
        node_packs=IMAGE_PACKS,
        visibility_timeout_s=2,
        drain_timeout_s=15,
    ) as local:
        local.wait_ready()
        yield local


@pytest.fixture(scope="module")
def alice(stack: LocalStack) -> Api:
    return Api(stack.url, KEYS["alice"])


def both_running(api: Api, *job_ids: str) -> bool:
    return all(api.job(job_id)["status"] == "running" for job_id in job_ids)


def test_a_job_succeeds_and_its_outputs_download_from_presigned_urls(stack: LocalStack, alice: Api) -> None:
    job_id = alice.submit(image_only())
    view = alice.wait_status(job_id)

    assert view["status"] == "succeeded", view
    assert sorted(o["filename"] for o in view["outputs"]) == ["demo/mask_00001_.png", "demo/outpaint_00001_.png"]
    for output in view["outputs"]:
        download = requests.get(output["url"], timeout=10)  # no API key: the URL itself authorises
        assert download.status_code == 200 and download.headers["Content-Type"] == "image/png"
        assert len(download.content) == output["size"]
        size = (160, 128) if "outpaint" in output["filename"] else (320, 256)  # padded 256x192, halved / mask
        assert Image.open(io.BytesIO(download.content)).size == size
    assert requests.get(view["outputs"][0]["url"].replace("sig=", "sig=0"), timeout=10).status_code == 403
    assert Api(stack.url, KEYS["bob"]).http.get(f"{stack.url}/v1/jobs/{job_id}", timeout=10).status_code == 404


def test_worker_figures_are_served_at_v1_metrics(stack: LocalStack, alice: Api) -> None:
    job_id = alice.submit(image_only())
    assert alice.wait_status(job_id)["status"] == "succeeded"

    figures = alice.http.get(f"{stack.url}/v1/metrics", timeout=10)
    assert figures.status_code == 200
    metrics = figures.json()["metrics"]
    assert metrics["JobsSucceeded"]["count"] >= 1 and metrics["QueueWait"]["unit"] == "Seconds"
    assert metrics["NodeTime"]["count"] >= 5 and metrics["Execution"]["min"] > 0
    assert requests.get(f"{stack.url}/v1/metrics", timeout=10).status_code == 401  # an API key is needed
    carol = Api(stack.url, KEYS["carol"]).http.get(f"{stack.url}/v1/metrics", timeout=10)
    assert carol.json() == {"metrics": {}, "jobs_in_flight": 0}  # a tenant with no jobs sees no one's figures


def test_blob_urls_refuse_escaping_keys_and_unsigned_requests(stack: LocalStack) -> None:
    parts = urlsplit(stack.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
    connection.request("GET", "/v1/blobs/outputs/../secrets.json?expires=9999999999&sig=00")
    response = connection.getresponse()
    assert response.status == 400 and b"'..' segment" in response.read()
    connection.request("GET", "/v1/blobs/outputs/alice/x.png")
    response = connection.getresponse()
    assert response.status == 403 and b"missing expires or sig" in response.read()
    connection.close()


@pytest.mark.parametrize(
    ("header", "status", "reason"),
    [
        (("Content-Length", str(11 * 1024 * 1024)), 413, b"larger than 10485760 bytes"),
        (("Content-Length", "-5"), 400, b"malformed HTTP request: Invalid character in Content-Length"),
    ],
)
def test_the_server_refuses_bodies_it_will_not_read(
    stack: LocalStack, header: tuple[str, str], status: int, reason: bytes
) -> None:
    parts = urlsplit(stack.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
    connection.putrequest("POST", "/v1/jobs")
    connection.putheader("x-api-key", KEYS["alice"])
    connection.putheader(*header)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == status and reason in response.read()
    assert response.getheader("Connection") == "close"
    connection.close()


def test_an_uploaded_input_feeds_load_image(stack: LocalStack, alice: Api) -> None:
    ticket = alice.http.post(f"{stack.url}/v1/uploads", json={"filename": "in.png", "content_type": "image/png"})
    assert ticket.status_code == 201, ticket.text
    upload = ticket.json()
    buffer = io.BytesIO()
    Image.new("RGB", (10, 6), (255, 0, 0)).save(buffer, format="PNG")
    assert requests.put(upload["url"], data=b"x", headers={"Content-Type": "text/plain"}, timeout=10).status_code == 403
    put = requests.put(upload["url"], data=buffer.getvalue(), headers=upload["headers"], timeout=10)
    assert put.status_code == 200

    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "inverted"}},
    }
    view = alice.wait_status(alice.submit(workflow, inputs={"in.png": {"key": upload["key"]}}))
    assert view["status"] == "succeeded", view
    image = Image.open(io.BytesIO(requests.get(view["outputs"][0]["url"], timeout=10).content)).convert("RGB")
    assert image.size == (10, 6) and image.getpixel((0, 0)) == (0, 255, 255)


def test_the_submit_command_uploads_inputs_waits_and_downloads(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.new("RGB", (5, 4), (0, 0, 255)).save(tmp_path / "blue.png")
    workflow = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "blue.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cli/copy"}},
    }
    (tmp_path / "workflow.json").write_text(json.dumps({"prompt": workflow}))
    parser = argparse.ArgumentParser()
    submit.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "submit",
            str(tmp_path / "workflow.json"),
            f"--endpoint={stack.url}",
            f"--api-key={KEYS['bob']}",
            f"--input=blue.png={tmp_path / 'blue.png'}",
            "--format=webp",
            "--wait",
            f"--out={tmp_path / 'out'}",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    saved = tmp_path / "out" / "cli" / "copy_00001_.webp"
    assert f"wrote {saved}" in printed and "succeeded in" in printed
    assert Image.open(saved).size == (5, 4)


def test_a_queued_job_cancelled_never_runs(stack: LocalStack, alice: Api) -> None:
    busy = [alice.submit(wait_workflow(1.0, prefix=f"busy{i}")) for i in range(2)]
    wait_for(lambda: both_running(alice, *busy), what="both workers busy")
    job_id = alice.submit(wait_workflow(0.0, steps=1))

    cancel = alice.http.post(f"{stack.url}/v1/jobs/{job_id}/cancel", timeout=10)
    assert cancel.status_code == 200, cancel.text
    for other in busy:
        assert alice.wait_status(other)["status"] == "succeeded"
    view = alice.job(job_id)
    assert view["status"] == "cancelled" and view["started_at"] is None and view["outputs"] == []
    assert [e.type for e in stack.adapters.bus.events(job_id)] == [JobEventType.JOB_QUEUED, JobEventType.JOB_CANCELLED]
    again = alice.http.post(f"{stack.url}/v1/jobs/{job_id}/cancel", timeout=10)
    assert again.status_code == 409 and again.json()["error"]["type"] == "job_finished"


def test_a_running_job_cancelled_stops(stack: LocalStack, alice: Api) -> None:
    job_id = alice.submit(wait_workflow(30.0, steps=300))
    alice.wait_status(job_id, ("running",))
    cancel = alice.http.post(f"{stack.url}/v1/jobs/{job_id}/cancel", timeout=10)
    assert cancel.status_code == 202 and cancel.json()["cancel_requested"] is True  # the worker interrupts it
    view = alice.wait_status(job_id, timeout_s=5)
    assert view["status"] == "cancelled" and view["outputs"] == []
    manifest = f"outputs/alice/{job_id}/manifest.json"  # the worker's word on the job, and no output
    assert stack.adapters.blobs.list(f"outputs/alice/{job_id}/") == [manifest]
    assert json.loads(stack.adapters.blobs.get(manifest))["status"] == "cancelled"


def test_a_worker_killed_mid_job_leaves_the_job_to_another(stack: LocalStack, alice: Api) -> None:
    jobs = [alice.submit(wait_workflow(1.0, prefix=f"crash{i}")) for i in range(2)]
    wait_for(lambda: both_running(alice, *jobs), what="both workers busy")
    victim = stack.processes[0]
    os.kill(victim.pid or 0, signal.SIGKILL)
    victim.join(timeout=5)

    views = [alice.wait_status(job_id, timeout_s=30) for job_id in jobs]
    assert [v["status"] for v in views] == ["succeeded", "succeeded"]
    attempts = sorted(stack.adapters.store.get_by_id(job_id).attempts for job_id in jobs)  # type: ignore[union-attr]
    assert attempts == [1, 2]  # the killed worker's job was claimed again after its visibility ran out
    for job_id, view in zip(jobs, views, strict=True):
        (output,) = view["outputs"]
        assert stack.adapters.blobs.list(f"outputs/alice/{job_id}/") == [
            f"outputs/alice/{job_id}/{output['filename']}",
            f"outputs/alice/{job_id}/manifest.json",
        ]


def test_killed_workers_are_replaced_and_the_next_job_runs(stack: LocalStack, alice: Api) -> None:
    stack.wait_ready()
    victims = list(stack.processes)
    for victim in victims:
        os.kill(victim.pid or 0, signal.SIGKILL)
    for victim in victims:
        victim.join(timeout=5)

    wait_for(lambda: all(p.is_alive() and p not in victims for p in stack.processes), what="replacement workers")
    assert len(stack.processes) == 2
    assert {p.pid for p in stack.processes}.isdisjoint(v.pid for v in victims)
    job_id = alice.submit(wait_workflow(0.1, prefix="after-kill", color=7))
    assert alice.wait_status(job_id, timeout_s=60)["status"] == "succeeded"


def recorded_exit_code(process: BaseProcess, timeout_s: float = 5.0) -> int | None:
    """The process's exit code once recorded. The stack's supervisor wakes on the same exit and reaps it; the
    thread that loses that race to ``waitpid`` is told None for a moment (multiprocessing's ``poll``)."""
    deadline = time.monotonic() + timeout_s
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.exitcode


def test_sigterm_drains_a_worker_after_its_running_job(stack: LocalStack, alice: Api) -> None:
    """Runs last: it stops the workers (a drained worker exits 0 and is not replaced)."""
    stack.wait_ready()
    job_id = alice.submit(wait_workflow(1.0))
    alice.wait_status(job_id, ("running",))
    live = [p for p in stack.processes if p.is_alive()]
    for process in live:
        os.kill(process.pid or 0, signal.SIGTERM)
    for process in live:
        process.join(timeout=20)
    assert [recorded_exit_code(p) for p in live] == [0] * len(live)
    assert alice.job(job_id)["status"] == "succeeded"
    assert stack.processes == live  # drained on purpose: no replacement
