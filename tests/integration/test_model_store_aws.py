"""The S3 → EFS → NVMe model tiers against moto's S3 (real HTTP): one copy for many workers, takeover from a
killed holder, verification of every copy, the NVMe LRU, and the published inventory the API validates with.
Local directories stand in for EFS and for each worker's NVMe."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from comfyserve.adapters.aws.provision import create_bucket
from comfyserve.engine.catalog import Catalog
from comfyserve.engine.validation import validate_prompt
from comfyserve.model_store.errors import ModelStoreError, ModelVerifyError
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.published import ModelEntry, PublishedInventory, PublishedSource, write_inventory
from comfyserve.model_store.settings import ModelStoreSettings, api_inventory
from comfyserve.model_store.store import StoreInventory
from comfyserve.model_store.sync import sync
from comfyserve.model_store.tiered import TieredModelStore, nvme_key
from comfyserve.model_store.tiers import Resolved, Tier
from tests.integration.conftest import AwsClients

ROOT = Path(__file__).resolve().parents[2]
MODEL = "checkpoints/m.safetensors"
KEY = "inventory.json"


class Bucket:
    """A fresh models bucket; ``gets`` lists the keys every client made by :meth:`client` downloaded."""

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients
        self.name = f"models-{uuid.uuid4().hex[:10]}"
        self.gets: list[str] = []
        self.s3 = self.client()
        create_bucket(self.s3, self.name)

    def client(self) -> Any:
        client = self.clients.client("s3")
        client.meta.events.register("provide-client-params.s3.GetObject", self._count)
        return client

    def _count(self, params: dict[str, Any], **_: Any) -> None:
        self.gets.append(params["Key"])

    def model_gets(self, key: str = MODEL) -> int:
        return self.gets.count(key)

    def put(self, key: str, data: bytes) -> None:
        """Upload as ``comfyserve models sync --upload`` does: with the sha256 in the object's metadata."""
        self.s3.put_object(Bucket=self.name, Key=key, Body=data, Metadata={"sha256": _sha(data)})

    def store(self, efs: Path, nvme: LocalCache | None = None, client: Any = None, **kw: Any) -> TieredModelStore:
        s3 = client or self.client()
        return TieredModelStore(s3, self.name, PublishedSource(s3, self.name, KEY, ttl_s=0.01), efs, nvme, **kw)


@pytest.fixture
def bucket(aws_clients: AwsClients) -> Bucket:
    return Bucket(aws_clients)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _published(bucket: Bucket, *models: tuple[str, bytes]) -> None:
    for key, data in models:
        bucket.put(key, data)
    sync(bucket.s3, bucket.name, KEY)


class SlowBody:
    """The body of a GET that hands out its first chunk and then stalls (``stall_s``) before the rest."""

    def __init__(self, body: Any, stall_s: float) -> None:
        self.body, self.stall_s = body, stall_s

    def close(self) -> None:
        self.body.close()

    def iter_chunks(self, size: int) -> Any:
        for index, chunk in enumerate(self.body.iter_chunks(256 * 1024)):
            yield chunk
            if index == 0:
                time.sleep(self.stall_s)


class SlowS3:
    def __init__(self, client: Any, stall_s: float) -> None:
        self.client, self.stall_s = client, stall_s

    def get_object(self, **kw: Any) -> dict[str, Any]:
        response = dict(self.client.get_object(**kw))
        if kw["Key"] != KEY:
            response["Body"] = SlowBody(response["Body"], self.stall_s)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_two_workers_asking_at_once_make_one_copy_from_s3(bucket: Bucket, tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    _published(bucket, (MODEL, data))
    efs = tmp_path / "efs"
    stores = [
        bucket.store(efs, LocalCache(tmp_path / f"nvme{i}", 10**9), SlowS3(bucket.client(), 0.3), stale_after_s=5)
        for i in range(2)
    ]
    start = threading.Barrier(2)
    found: list[tuple[Tier, bytes]] = []

    def worker(store: TieredModelStore) -> None:
        start.wait()
        with store.resolve("checkpoints", "m.safetensors") as resolved:
            found.append((resolved.tier, resolved.path.read_bytes()))

    threads = [threading.Thread(target=worker, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bucket.model_gets() == 1
    assert sorted(tier for tier, _ in found) == [Tier.EFS, Tier.S3]  # the second waited for the first's copy
    assert all(content == data for _, content in found)
    assert _names(efs / "checkpoints") == [".m.safetensors.sha256", "m.safetensors"]  # no lock, no temp left
    with stores[0].resolve("checkpoints", "m.safetensors") as again:
        assert again.tier is Tier.NVME and again.path.is_relative_to(tmp_path / "nvme0")
    assert bucket.model_gets() == 1


HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.integration.conftest import AwsClients
from tests.integration.test_model_store_aws import Bucket, SlowS3
import boto3
clients = AwsClients(sys.argv[2], boto3.Session(region_name="us-east-1"))
bucket = Bucket.__new__(Bucket)
bucket.clients, bucket.name, bucket.gets = clients, sys.argv[3], []
store = bucket.store(Path(sys.argv[4]), client=SlowS3(bucket.client(), 3600), stale_after_s=0.5)
store.resolve("checkpoints", "m.safetensors").__enter__()
"""


def test_a_holder_killed_mid_copy_is_taken_over_and_the_result_verifies(
    bucket: Bucket, tmp_path: Path, moto_endpoint: str
) -> None:
    data = os.urandom(3 * 1024 * 1024)
    _published(bucket, (MODEL, data))
    efs = tmp_path / "efs"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), moto_endpoint, bucket.name, str(efs)])
    folder = efs / "checkpoints"
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".part") and p.stat().st_size > 0 for p in _listing(folder)):
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never started its copy"
            time.sleep(0.02)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    dead = (folder / ".m.safetensors.lock").read_text()
    assert (folder / f".m.safetensors.{dead}.part").stat().st_size < len(data)  # half written, then killed
    store = bucket.store(efs, stale_after_s=0.5)
    with store.resolve("checkpoints", "m.safetensors") as resolved:
        assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == data
    assert _names(folder) == [".m.safetensors.sha256", "m.safetensors"]  # stale lock and half file gone
    assert bucket.model_gets() == 1  # ours; the killed holder counted in its own process


def _fetch(store: TieredModelStore, name: str = "m.safetensors") -> Resolved:
    with store.resolve("checkpoints", name) as resolved:
        return resolved


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("damage", ["checksum", "truncated"])
def test_a_corrupt_object_is_refused_naming_the_model_and_fetched_anew_next_time(
    bucket: Bucket, tmp_path: Path, damage: str
) -> None:
    good = os.urandom(1024 * 1024)
    bad = bytes([good[0] ^ 1]) + good[1:] if damage == "checksum" else good[: len(good) // 2]
    bucket.put(MODEL, bad)
    entry = ModelEntry(name="m.safetensors", size=len(good), sha256=_sha(good))  # what the inventory promises
    write_inventory(bucket.s3, bucket.name, KEY, PublishedInventory.build({"checkpoints": [entry]}))
    efs = tmp_path / "efs"
    store = bucket.store(efs, LocalCache(tmp_path / "nvme", 10**9))
    expected = f"{len(bad)} bytes and sha256 {_sha(bad)[:12]}…, the inventory says {len(good)} bytes"
    for attempt in (1, 2):
        with pytest.raises(ModelVerifyError, match=f"^model {MODEL}: the copy of s3://") as caught:
            _fetch(store)
        assert expected in str(caught.value)
        assert _listing(efs / "checkpoints") == [] and _listing(tmp_path / "nvme" / "checkpoints") == []
        assert bucket.model_gets() == attempt  # nothing was kept: each request fetches again
    bucket.put(MODEL, good)  # the object is repaired
    with store.resolve("checkpoints", "m.safetensors") as resolved:
        assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == good


def test_a_damaged_efs_file_is_replaced_and_a_changed_object_is_named(bucket: Bucket, tmp_path: Path) -> None:
    data = os.urandom(512 * 1024)
    _published(bucket, (MODEL, data))
    efs = tmp_path / "efs"
    store = bucket.store(efs)
    _fetch(store)
    (efs / MODEL).write_bytes(data[:1000])  # truncated on EFS behind our back
    with store.resolve("checkpoints", "m.safetensors") as resolved:
        assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == data
    (efs / MODEL).write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, other bytes: only a load notices
    store.invalidate("checkpoints", "m.safetensors")
    assert not (efs / MODEL).exists()
    bucket.put(MODEL, os.urandom(512 * 1024))  # replaced in S3 without a new sync
    with pytest.raises(ModelStoreError, match=f"model {MODEL}: .* changed since the inventory was published"):
        _fetch(store)
    assert not (efs / MODEL).exists()


def test_nvme_tier_evicts_by_bytes_and_reads_from_efs_what_does_not_fit(bucket: Bucket, tmp_path: Path) -> None:
    models = {f"checkpoints/{n}.safetensors": os.urandom(300 * 1024) for n in "abc"}
    _published(bucket, *models.items())
    nvme = LocalCache(tmp_path / "nvme", budget_bytes=700 * 1024)
    store = bucket.store(tmp_path / "efs", nvme)
    tiers = []
    for name in ("a", "b", "a", "c"):
        with store.resolve("checkpoints", f"{name}.safetensors") as resolved:
            tiers.append(resolved.tier)
    assert tiers == [Tier.S3, Tier.S3, Tier.NVME, Tier.S3]
    assert [key.rsplit("/", 1)[1] for key in nvme.cached()] == ["a.safetensors", "c.safetensors"]  # b: least recent
    with store.resolve("checkpoints", "b.safetensors") as resolved:  # back from EFS, not from S3
        assert resolved.tier is Tier.EFS and resolved.path.read_bytes() == models["checkpoints/b.safetensors"]
    a, b = (nvme_key("checkpoints", entry) for entry in store.source.get().folders["checkpoints"][:2])
    with nvme.pinned(a), nvme.pinned(b):
        assert _fetch(store, "c.safetensors").tier is Tier.NVME
    assert sum(bucket.model_gets(key) for key in models) == 3


def test_sync_publishes_one_inventory_the_api_validates_against(bucket: Bucket, tmp_path: Path) -> None:
    local = tmp_path / "upload"
    (local / "checkpoints").mkdir(parents=True)
    (local / "checkpoints" / "a.safetensors").write_bytes(b"a" * 1000)
    (local / "clip").mkdir()  # ComfyUI's older name of text_encoders
    (local / "clip" / "t5.safetensors").write_bytes(b"t" * 10)
    (local / "checkpoints" / "notes.txt").write_text("not a model")
    bucket.s3.put_object(Bucket=bucket.name, Key="loras/foreign.safetensors", Body=b"uploaded by someone else")
    first = sync(bucket.s3, bucket.name, KEY, upload=local)
    assert first.uploaded == ["checkpoints/a.safetensors", "clip/t5.safetensors"]
    assert first.hashed == ["loras/foreign.safetensors"]  # no sha256 in its metadata: streamed once
    inventory = first.inventory
    assert inventory.entry("checkpoints", "a.safetensors") == ModelEntry(
        name="a.safetensors", size=1000, sha256=_sha(b"a" * 1000), etag=inventory.folders["checkpoints"][0].etag
    )
    assert inventory.entry("text_encoders", "t5.safetensors").s3_key("text_encoders") == "clip/t5.safetensors"  # type: ignore[union-attr]
    again = sync(bucket.s3, bucket.name, KEY, upload=local)
    assert (again.uploaded, again.hashed, again.inventory.version) == ([], [], inventory.version)

    settings = ModelStoreSettings.from_env({"COMFYSERVE_MODELS_BUCKET": bucket.name, "COMFYSERVE_INVENTORY_KEY": KEY})
    api = api_inventory(settings, bucket.client())
    assert api is not None and api.names("checkpoints") == ["a.safetensors"]
    specs = Catalog.packaged().specs
    prompt: dict[str, dict[str, Any]] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    assert validate_prompt(prompt, specs, inventory=api).ok
    prompt["1"]["inputs"]["ckpt_name"] = "missing.safetensors"
    result = validate_prompt(prompt, specs, inventory=api, strict=False)
    [error] = result.node_errors["1"]["errors"]
    assert error["type"] == "value_not_in_list" and error["message"] == "Value not in list"
    assert "ckpt_name: 'missing.safetensors' not in ['a.safetensors']" in error["details"]

    worker = StoreInventory(bucket.store(tmp_path / "efs"))
    assert worker.path("clip", "t5.safetensors").read_bytes() == b"t" * 10  # fetched from its alias key
    assert bucket.model_gets("clip/t5.safetensors") == 1


def test_models_command_syncs_warms_lists_and_publishes(
    bucket: Bucket, tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from comfyserve.cli import main

    local = tmp_path / "upload" / "checkpoints"
    local.mkdir(parents=True)
    (local / "a.safetensors").write_bytes(b"a" * 100)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("COMFYSERVE_MODELS_BUCKET", bucket.name)
    monkeypatch.setenv("COMFYSERVE_MODEL_ROOT", str(tmp_path / "efs"))
    assert main(["models", "sync", "--upload", str(tmp_path / "upload"), "--warm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"uploaded s3://{bucket.name}/checkpoints/a.safetensors"
    assert out[1].startswith(f"published s3://{bucket.name}/inventory.json: 1 models, version ")
    assert out[2:] == ["warm checkpoints/a.safetensors: copied from s3"]
    assert (tmp_path / "efs" / "checkpoints" / "a.safetensors").read_bytes() == b"a" * 100

    assert main(["models", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == f"checkpoints/a.safetensors\t100\t{_sha(b'a' * 100)}"
    assert main(["models", "list", "--json"]) == 0
    document = PublishedInventory.model_validate_json(capsys.readouterr().out)
    document.folders["checkpoints"].append(ModelEntry(name="b.safetensors", size=1, sha256=_sha(b"b")))
    edited = tmp_path / "inventory.json"
    edited.write_text(document.model_dump_json())
    assert main(["models", "publish", str(edited)]) == 0
    assert PublishedSource(bucket.s3, bucket.name).get().entry("checkpoints", "b.safetensors") is not None

    edited.write_text('{"folders": {"checkpoints": [{"name": "c.safetensors", "size": -1, "sha256": "x"}]}}')
    assert main(["models", "publish", str(edited)]) == 2
    assert capsys.readouterr().err.startswith(f"comfyserve models: {edited} is not a model inventory: folders.")
    monkeypatch.delenv("COMFYSERVE_MODELS_BUCKET")
    assert main(["models", "list"]) == 2
    assert "no models bucket: pass --bucket or set COMFYSERVE_MODELS_BUCKET" in capsys.readouterr().err


def test_a_warm_worker_reads_the_inventory_only_for_news_and_never_serves_a_replaced_model(
    bucket: Bucket, tmp_path: Path
) -> None:
    old, new = os.urandom(200 * 1024), os.urandom(200 * 1024)  # same size: only the stamp tells them apart
    _published(bucket, (MODEL, old))
    s3 = bucket.client()
    source = PublishedSource(s3, bucket.name, KEY, ttl_s=3600, min_refresh_s=0)
    store = TieredModelStore(s3, bucket.name, source, tmp_path / "efs", LocalCache(tmp_path / "nvme", 10**9))
    models = StoreInventory(store)
    assert _fetch(store).path.read_bytes() == old
    for _ in range(3):
        assert models.has("checkpoints", "m.safetensors") and _fetch(store).tier is Tier.NVME
    assert source.reads == 1  # warm: no inventory requests

    _published(bucket, (MODEL, new), ("checkpoints/n.safetensors", b"n" * 10))  # replaced and added, then synced
    assert models.has("checkpoints", "n.safetensors")  # a name it lacked: one re-read
    assert source.reads == 2
    resolved = _fetch(store)
    assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == new  # the stamp said "old version"
    assert not models.has("checkpoints", "nope.safetensors") and source.reads == 3

    newest = os.urandom(200 * 1024)
    bucket.put(MODEL, newest)
    sync(bucket.s3, bucket.name, KEY)
    # Another instance (its own EFS and NVMe) whose copy of the inventory predates that sync: If-Match fails on
    # the old ETag, it re-reads the inventory and fetches the newest bytes.
    fresh = TieredModelStore(s3, bucket.name, source, tmp_path / "efs2")
    resolved = _fetch(fresh)
    assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == newest
    assert source.reads == 4 and bucket.model_gets() == 4  # 412, then the newest


@pytest.mark.parametrize("damage", [None, "checksum", "truncated"])
def test_large_objects_come_in_parallel_ranged_gets_and_are_verified_the_same(
    bucket: Bucket, tmp_path: Path, damage: str | None
) -> None:
    good = os.urandom(1024 * 1024 + 3)  # five parts of 256 KiB, the last one 3 bytes
    served = {None: good, "checksum": good[:-1] + bytes([good[-1] ^ 1]), "truncated": good[: 600 * 1024]}[damage]
    bucket.put(MODEL, served)
    entry = ModelEntry(name="m.safetensors", size=len(good), sha256=_sha(good))
    write_inventory(bucket.s3, bucket.name, KEY, PublishedInventory.build({"checkpoints": [entry]}))
    store = bucket.store(tmp_path / "efs", part_bytes=256 * 1024, parallel=3)
    if damage is None:
        resolved = _fetch(store)
        assert resolved.tier is Tier.S3 and resolved.path.read_bytes() == good
        assert bucket.model_gets() == 5
        return
    message = {
        "checksum": f"the copy of s3://{bucket.name}/{MODEL} has {len(good)} bytes and sha256 {_sha(served)[:12]}",
        "truncated": f"s3://{bucket.name}/{MODEL} is shorter than the {len(good)} bytes the inventory says",
    }[damage]
    with pytest.raises(ModelVerifyError, match=f"^model {MODEL}: ") as caught:
        _fetch(store)
    assert message in str(caught.value)
    assert _listing(tmp_path / "efs" / "checkpoints") == []  # no half file, no temporary, no stamp


def test_the_api_refuses_a_model_the_published_inventory_lacks_and_queues_nothing(
    bucket: Bucket, tmp_path: Path
) -> None:
    from tests.api_stack import make_stack, workflow
    from tests.integration.test_service_local import rewired

    _published(bucket, ("checkpoints/v1-5.safetensors", b"weights"))
    settings = ModelStoreSettings.from_env({"COMFYSERVE_MODELS_BUCKET": bucket.name})
    stack = rewired(make_stack(tmp_path), inventory=api_inventory(settings, bucket.client()))

    accepted = stack.call("POST", "/v1/jobs", body={"workflow": workflow()})
    assert accepted.status == 202

    unknown = workflow()
    unknown["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    refused = stack.call("POST", "/v1/jobs", body={"workflow": unknown})
    assert refused.status == 400
    [error] = refused.json()["node_errors"]["4"]["errors"]
    assert error == {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": "ckpt_name: 'sdxl.safetensors' not in ['v1-5.safetensors']",
        "extra_info": {
            "input_name": "ckpt_name",
            "input_config": error["extra_info"]["input_config"],
            "received_value": "sdxl.safetensors",
        },
    }
    assert len(stack.jobs.list("tenant-a")[0]) == 1 and stack.queue.approximate_depth().visible == 1
    assert bucket.model_gets("checkpoints/v1-5.safetensors") == 0  # the API never touches model files
