"""Model tiers through real jobs (tiny models, moto S3): each load names its tier, a corrupt checkpoint fails
its job with a clear error while the same executor keeps serving, and preloading reports seconds per tier."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from comfyserve.engine.context import RunContext
from comfyserve.engine.executor import ExecutionResult, Executor
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import validate_prompt
from comfyserve.model_store.errors import ModelStoreError
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.preload import preload
from comfyserve.model_store.store import StoreInventory
from comfyserve.model_store.sync import sync
from comfyserve.model_store.tiered import stamp_path
from comfyserve.model_store.tiers import ModelLoad, Tier, recording
from comfyserve.nodes import builtin_registry
from tests.integration.test_model_store_aws import KEY, Bucket
from tests.unit.models_fixtures import SD1, tiny_models  # noqa: F401

REGISTRY = builtin_registry()
VAE = "vae/tiny-vae.safetensors"


@pytest.fixture
def bucket(aws_clients: Any) -> Bucket:
    return Bucket(aws_clients)


def _job(ckpt: str) -> dict[str, dict[str, Any]]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def _run(executor: Executor, models: ModelInventory, tmp: Path) -> tuple[ExecutionResult, list[ModelLoad]]:
    prompt = _job(SD1.removeprefix("checkpoints/"))
    validation = validate_prompt(prompt, REGISTRY.specs(), inventory=models)
    assert validation.ok, validation.node_errors
    out = tmp / uuid.uuid4().hex
    ctx = RunContext(output_dir=out, temp_dir=out / "temp", input_dir=out / "in", models=models)
    with recording() as loads:
        result = executor.execute(validation.prompt, validation.outputs, context=ctx, prompt_id=out.name)
    return result, loads


def _upload(bucket: Bucket, tiny: Path, *models: str) -> None:
    for model in models:
        bucket.put(model, (tiny / model).read_bytes())
    sync(bucket.s3, bucket.name, KEY)


def test_a_corrupt_checkpoint_fails_its_job_clearly_and_the_worker_keeps_serving(
    bucket: Bucket,
    tmp_path: Path,
    tiny_models: Path,  # noqa: F811
) -> None:
    _upload(bucket, tiny_models, SD1)
    efs = tmp_path / "efs"
    models = StoreInventory(bucket.store(efs, LocalCache(tmp_path / "nvme", 10**9)))
    good = (tiny_models / SD1).read_bytes()
    bucket.put(SD1, good[: len(good) // 2])  # truncated in S3 after the inventory was published
    executor = Executor(REGISTRY)

    failed, loads = _run(executor, models, tmp_path)
    assert failed.status == "error" and loads == []
    [error] = failed.errors
    assert error["node_id"] == "1" and error["node_type"] == "CheckpointLoaderSimple"
    assert error["exception_message"] == (
        f"model {SD1}: s3://{bucket.name}/{SD1} changed since the inventory was published; run `comfyserve models sync`"
    )
    assert not (efs / SD1).exists()

    bucket.put(SD1, good)  # restored (same ETag): the same executor fetches it again and runs
    served, loads = _run(executor, models, tmp_path)
    assert served.status == "success" and "4" in served.ui_outputs
    assert [(load.model, load.tier) for load in loads] == [(SD1, Tier.S3)]
    assert bucket.model_gets(SD1) == 2


def test_an_unreadable_file_on_efs_is_dropped_and_fetched_again(
    bucket: Bucket,
    tmp_path: Path,
    tiny_models: Path,  # noqa: F811
) -> None:
    _upload(bucket, tiny_models, SD1)
    efs = tmp_path / "efs"
    efs_file = efs / SD1
    efs_file.parent.mkdir(parents=True)
    efs_file.write_bytes(b"\xff" * (tiny_models / SD1).stat().st_size)  # right size, garbage
    stamp_path(efs_file).write_text(hashlib.sha256((tiny_models / SD1).read_bytes()).hexdigest())  # "verified"
    models = StoreInventory(bucket.store(efs))

    failed, _ = _run(Executor(REGISTRY), models, tmp_path)
    assert failed.status == "error"
    assert failed.errors[0]["exception_message"] == (
        "cannot read model file 'tiny-sd15.safetensors': the file is truncated or corrupt"
    )
    assert not efs_file.exists() and not stamp_path(efs_file).exists()  # it did not match its sha256, so it went
    served, loads = _run(Executor(REGISTRY), models, tmp_path)
    assert served.status == "success" and [load.tier for load in loads] == [Tier.S3]


def test_preload_reports_seconds_per_tier_and_jobs_then_load_from_ram(
    bucket: Bucket,
    tmp_path: Path,
    tiny_models: Path,  # noqa: F811
) -> None:
    _upload(bucket, tiny_models, SD1, VAE)
    models = StoreInventory(bucket.store(tmp_path / "efs", LocalCache(tmp_path / "nvme", 10**9)))
    parts, loads = preload(models, [SD1, VAE])
    assert [(load.model, load.tier) for load in loads] == [(SD1, Tier.S3), (VAE, Tier.S3)]
    assert set(parts) == {"s3"} and parts["s3"] == pytest.approx(sum(load.seconds for load in loads), abs=1e-5)
    assert all(load.fetch_s > 0 and load.load_s > 0 for load in loads)

    served, job_loads = _run(Executor(REGISTRY), models, tmp_path)
    assert served.status == "success" and [load.tier for load in job_loads] == [Tier.RAM]

    with pytest.raises(ModelStoreError, match=r"preloading checkpoints/nope\.safetensors failed: .*not in the"):
        preload(models, ["checkpoints/nope.safetensors"])
    with pytest.raises(ModelStoreError, match=r"preload entry 'nope' is not \"<folder>/<name>\""):
        preload(models, ["nope"])
