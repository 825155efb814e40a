"""Animated and video outputs through the worker as ComfyUI reports them: each file published as written with
its content type (even when the job asks for webp or jpeg outputs), the ``animated`` flags in the manifest's
ui, ``/history`` (``images`` plus ``animated: [true]``, as ComfyUI's ``ui.PreviewVideo``) and the completion
event's outputs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from comfyserve.contracts.events import JobEventType
from comfyserve.contracts.jobs import JobRecord, JobStatus, OutputOptions, QueueMessage
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.engine.registry import NodeRegistry, build_registry
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.service.comfyui_jobs import job_summary
from comfyserve.service.completion import Completion
from comfyserve.service.history import history_entry
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.outputs import LocalOutput, encode
from tests.api_stack import make_stack
from tests.unit.media_fixtures import read_animation, read_video

TENANT = "acme"
PACKS = ("comfyserve.nodes.image", "comfyserve.nodes.animated", "comfyserve.nodes.video")


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


WORKFLOW: dict[str, Any] = {
    "1": _node("EmptyImage", width=16, height=8, batch_size=1, color=0x3080F0),
    "2": _node(
        "SaveAnimatedWEBP",
        images=["7", 0],
        filename_prefix="anim",
        fps=5.0,
        lossless=True,
        quality=80,
        method="default",
    ),
    "3": _node("SaveAnimatedPNG", images=["7", 0], filename_prefix="anim", fps=4.0, compress_level=4),
    "4": _node("CreateVideo", images=["7", 0], fps=10.0),
    "5": _node("SaveVideo", video=["4", 0], filename_prefix="video/clip", format="auto", codec="auto"),
    "6": _node("ImageInvert", image=["1", 0]),
    "7": _node("ImageBatch", image1=["1", 0], image2=["6", 0]),  # two distinct frames (Pillow merges repeats)
}


@pytest.fixture
def adapters(tmp_path: Path) -> Iterator[LocalAdapters]:
    local = LocalAdapters.open(tmp_path, "http://127.0.0.1:9")
    local.blobs.on_created(Completion(local.store, local.bus, local.blobs).on_object_created)
    yield local
    local.close()


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return build_registry(PACKS)


def run_job(adapters: LocalAdapters, registry: NodeRegistry, output: OutputOptions) -> JobRecord:
    record = JobRecord(job_id=uuid.uuid4().hex, tenant=TENANT, workflow=WORKFLOW, output=output)
    adapters.store.create(record)
    adapters.queue.send(QueueMessage(job_id=record.job_id, tenant=TENANT))
    ports = WorkerPorts(adapters.blobs, adapters.queue, adapters.store, adapters.bus)
    settings = WorkerSettings(work_dir=adapters.work_dir, receive_wait_s=0, visibility_timeout_s=30)
    worker = Worker(ports, BuiltinBackend(registry), settings)
    assert worker.poll() == [Outcome.SUCCEEDED]
    final = adapters.store.get_by_id(record.job_id)
    assert final is not None and final.status is JobStatus.SUCCEEDED
    return final


@pytest.mark.parametrize("output", [OutputOptions(), OutputOptions(format="jpeg", quality=80)])
def test_animated_and_video_files_are_published_as_written_with_their_content_types(
    adapters: LocalAdapters, registry: NodeRegistry, output: OutputOptions, tmp_path: Path
) -> None:
    record = run_job(adapters, registry, output)
    prefix = f"outputs/{TENANT}/{record.job_id}/"
    assert [(o.node_id, o.key, o.content_type) for o in record.outputs] == [
        ("2", prefix + "anim_00001_.webp", "image/webp"),
        ("3", prefix + "anim_00002_.png", "image/png"),
        ("5", prefix + "video/clip_00001_.mp4", "video/mp4"),
    ]
    files = {}
    for ref in record.outputs:
        files[ref.node_id] = tmp_path / ref.filename.replace("/", "_")
        files[ref.node_id].write_bytes(adapters.blobs.get(ref.key))
    assert [len(read_animation(files[n]).frames) for n in ("2", "3")] == [2, 2]  # still animated
    assert read_animation(files["2"]).durations == [200] * 2
    video = read_video(files["5"])
    assert (video.codec, video.rate, video.frames.shape) == ("h264", 10, (2, 8, 16, 3))

    manifest = JobManifest.model_validate_json(adapters.blobs.get(manifest_key(TENANT, record.job_id)))
    flags = {"2": {"animated": [True]}, "3": {"animated": [True]}, "5": {"animated": [True]}}
    assert manifest.ui == record.ui == flags
    assert [o.content_type for o in manifest.outputs] == ["image/webp", "image/png", "video/mp4"]
    succeeded = [e for e in adapters.bus.events(record.job_id) if e.type is JobEventType.JOB_SUCCEEDED]
    assert [o.content_type for o in succeeded[0].outputs] == ["image/webp", "image/png", "video/mp4"]


def test_history_reports_images_and_the_animated_flag_as_comfyui_does(
    adapters: LocalAdapters, registry: NodeRegistry, tmp_path: Path
) -> None:
    record = run_job(adapters, registry, OutputOptions())
    entry = history_entry(make_stack(tmp_path / "api").service.deps, record)["outputs"]
    job = record.job_id
    assert entry == {
        "2": {"animated": [True], "images": [{"filename": "anim_00001_.webp", "subfolder": job, "type": "output"}]},
        "3": {"animated": [True], "images": [{"filename": "anim_00002_.png", "subfolder": job, "type": "output"}]},
        "5": {
            "animated": [True],
            "images": [{"filename": "clip_00001_.mp4", "subfolder": f"{job}/video", "type": "output"}],
        },
    }
    assert list(entry["5"]) == ["images", "animated"]  # ComfyUI's order


def test_a_still_image_is_still_re_encoded_on_request(tmp_path: Path) -> None:
    from PIL import Image

    still = tmp_path / "still.png"
    Image.new("RGB", (4, 4), (10, 20, 30)).save(still)
    name, data, content_type = encode(LocalOutput("9", still, "still.png"), OutputOptions(format="webp"))
    assert (name, content_type, data[8:12]) == ("still.webp", "image/webp", b"WEBP")


def test_the_job_list_previews_the_first_node_with_files(
    adapters: LocalAdapters, registry: NodeRegistry, tmp_path: Path
) -> None:
    """A text-only ui node listed before the files (Preview Any) is skipped for the preview."""
    record = run_job(adapters, registry, OutputOptions())
    with_text = record.model_copy(update={"ui": {"0": {"text": ["24.0"]}, **record.ui}})
    summary = job_summary(make_stack(tmp_path / "api").service.deps, with_text)
    assert summary["preview_output"] == {
        "filename": "anim_00001_.webp",
        "subfolder": record.job_id,
        "type": "output",
        "nodeId": "2",
        "mediaType": "images",
    }
