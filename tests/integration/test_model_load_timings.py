"""Model loads in a job's timings: the worker loop runs real jobs on a tiny checkpoint and LoRA and reports the
seconds per tier the models came from in the job record, its manifest and the job's EMF document."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from comfyserve.contracts.jobs import Timings
from comfyserve.contracts.manifest import JobManifest, manifest_key
from comfyserve.engine.inventory import ModelInventory
from comfyserve.localstack.adapters import LocalAdapters
from comfyserve.nodes import builtin_registry
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.loop import Outcome, Worker, WorkerPorts, WorkerSettings
from comfyserve.worker.telemetry import WorkerTelemetry, summarize
from tests.integration.test_worker_loop import TENANT, enqueue, stack_adapters  # noqa: F401
from tests.unit.models_fixtures import SD1, tiny_models  # noqa: F401

LORA = "loras/tiny-sd15-lora.safetensors"


def _job(lora_strength: float) -> dict[str, dict[str, Any]]:
    lora = {"model": ["1", 0], "clip": ["1", 1], "lora_name": LORA.removeprefix("loras/")}
    sampler = {"seed": 0, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    sampler |= {"model": ["2", 0], "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0]}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": SD1.removeprefix("checkpoints/")}},
        "2": {"class_type": "LoraLoader", "inputs": {**lora, "strength_model": lora_strength, "strength_clip": 1.0}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["2", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": sampler},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }


def test_the_job_timings_and_metrics_name_the_tier_each_model_came_from(
    stack_adapters: LocalAdapters,  # noqa: F811
    tiny_models: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"  # this test's own copies: no other test has loaded them into RAM
    for model in (SD1, LORA):
        (root / model).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_models / model, root / model)
    documents: list[dict[str, Any]] = []
    ports = WorkerPorts(stack_adapters.blobs, stack_adapters.queue, stack_adapters.store, stack_adapters.bus)
    backend = BuiltinBackend(builtin_registry(), models=ModelInventory.scan(root))
    settings = WorkerSettings(work_dir=stack_adapters.work_dir, receive_wait_s=0)
    worker = Worker(ports, backend, settings, telemetry=WorkerTelemetry(documents.append))

    timings: list[Timings] = []
    for strength in (1.0, 0.5):  # the second job's checkpoint comes from the output cache, its LoRA from RAM
        record = enqueue(stack_adapters, _job(strength))
        assert worker.poll() == [Outcome.SUCCEEDED]
        final = stack_adapters.store.get_by_id(record.job_id)
        assert final is not None
        manifest = JobManifest.model_validate_json(stack_adapters.blobs.get(manifest_key(TENANT, record.job_id)))
        assert manifest.timings.model_load_s == final.timings.model_load_s
        timings.append(final.timings)

    first, second = timings
    assert set(first.model_load_s) == {"local"} and first.model_load_s["local"] > 0
    assert set(second.model_load_s) == {"ram"}
    finished = [document for document in documents if document.get("JobsSucceeded")]
    assert [len(document["ModelLoadLocal"]) for document in finished[:1]] == [2]  # the checkpoint and the LoRA
    assert sum(finished[0]["ModelLoadLocal"]) == pytest.approx(first.model_load_s["local"], abs=1e-5)
    assert len(finished[1]["ModelLoadRam"]) == 1 and "ModelLoadLocal" not in finished[1]
    figures = summarize(documents)["metrics"]
    assert figures["ModelLoadLocal"]["count"] == 2 and figures["ModelLoadRam"]["count"] == 1


def test_a_record_stored_before_model_load_timings_still_loads() -> None:
    assert Timings.model_validate({"queued_s": 0.5, "per_node": {"3": 1.0}}).model_load_s == {}
