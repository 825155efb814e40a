"""The real ``comfyserve worker`` process on the ComfyUI backend, on the session's moto server: it starts the fake
ComfyUI (tests/unit/fake_comfyui) as its managed child, publishes the catalog that ComfyUI serves under
``COMFYSERVE_CATALOG_KEY`` (what the API validates against), takes a job from SQS, writes its outputs and manifest
to S3, and the manifest's S3 event through EventBridge to the completion use case ends the job succeeded once.
On SIGTERM it drains and stops its ComfyUI."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobStatus
from comfyserve.engine.catalog import Catalog
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY, PublishedCatalog
from tests.integration.stack_helpers import wait_for
from tests.integration.test_worker_process_aws import TENANT, Cloud, cloud, cold_start, lifecycles  # noqa: F401

FAKE_COMFYUI = Path(__file__).resolve().parents[1] / "unit" / "fake_comfyui"
CATALOG_KEY = "catalog/comfyui-fleet.json"  # not the default: the worker must publish where it is told
WORKFLOW = {
    "2": {"class_type": "FakeGenerate", "inputs": {"mode": "ok", "steps": 3}},
    "3": {"class_type": "FakeSave", "inputs": {"images": ["2", 0], "filename_prefix": "ComfyUI", "extra_kinds": True}},
}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_worker_on_comfyui_publishes_its_catalog_and_completes_a_job_once(cloud: Cloud) -> None:  # noqa: F811
    worker = cloud.start_worker(
        "c1",
        COMFYSERVE_BACKEND="comfyui",
        COMFYUI_DIR=str(FAKE_COMFYUI),
        COMFYSERVE_CUSTOM_NODES="",
        COMFYSERVE_CATALOG_KEY=CATALOG_KEY,
    )
    wait_for(lambda: "cold start" in cloud.log("c1"), 60, "the worker's cold start")
    parts = cold_start(cloud.log("c1"))
    assert (parts["backend"], parts["worker_id"]) == ("comfyui", "c1")
    blobs = cloud.adapters.blobs
    assert sorted(json.loads(blobs.get(CATALOG_KEY))) == ["FakeGenerate", "FakeLoad", "FakeSave"]
    assert blobs.head(DEFAULT_CATALOG_KEY) is None
    live = PublishedCatalog(blobs, Catalog.packaged(), key=CATALOG_KEY, refresh_s=0.0)
    assert "FakeSave" in live.specs and "KSampler" not in live.specs  # the API validates against ComfyUI's nodes
    [written] = (cloud.root / "c1").rglob("fake-argv.json")  # the fake ComfyUI's command line
    argv = json.loads(written.read_text())
    port = int(argv[argv.index("--port") + 1])
    assert argv[argv.index("--listen") + 1] == "127.0.0.1" and not refused(port)

    job_id = cloud.submit(WORKFLOW)
    [record] = cloud.wait_finished([job_id], timeout_s=30)

    assert record.status is JobStatus.SUCCEEDED and record.attempts == 1, record.error
    prefix = f"outputs/{TENANT}/{job_id}/"
    preview = record.outputs[1].filename  # PreviewImage-style: a random part in its name
    assert preview.startswith("ComfyUI_temp_fake_")
    assert [(ref.key, ref.type) for ref in record.outputs] == [
        (prefix + "ComfyUI_00001_.png", "output"),
        (prefix + preview, "temp"),
        (prefix + "ComfyUI_00001_.flac", "output"),
        (prefix + "ComfyUI_00001_.mp4", "output"),
    ]
    assert record.ui == {"3": {"text": ["not a file"]}}  # the non-file UI output, through the manifest
    assert blobs.get(prefix + "ComfyUI_00001_.png").startswith(b"\x89PNG")
    assert blobs.get(prefix + "ComfyUI_00001_.mp4") == b"mp4"
    assert set(record.timings.per_node) == {"2", "3"}
    manifest = cloud.manifest(job_id)
    assert (manifest.status, manifest.worker_id, manifest.backend) == ("succeeded", "c1", "comfyui")
    assert [ref.key for ref in manifest.outputs] == [ref.key for ref in record.outputs]
    assert cloud.manifest_writes == {job_id: 1}
    assert lifecycles(cloud) == {job_id: {JobEventType.JOB_STARTED: 1, JobEventType.JOB_SUCCEEDED: 1}}

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert refused(port)  # its ComfyUI stopped with it
    assert cloud.queue.approximate_depth().total == 0
