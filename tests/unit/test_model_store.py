"""The model store's local parts: the lease lock, atomic copies, the NVMe LRU, the published inventory
document and the inventory views the API and the loaders use. S3 and EFS together: tests/integration."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from comfyserve.engine.catalog import Catalog
from comfyserve.engine.inventory import ModelInventory
from comfyserve.engine.validation import validate_prompt
from comfyserve.model_store.copying import copy_file, sha256_file, temp_name
from comfyserve.model_store.errors import LockTimeout
from comfyserve.model_store.local_cache import LocalCache
from comfyserve.model_store.lock import LeaseLock
from comfyserve.model_store.published import ListedInventory, ModelEntry, PublishedInventory
from comfyserve.model_store.settings import ModelStoreSettings, worker_inventory
from comfyserve.model_store.store import LocalModelStore, StoreInventory, resolve
from comfyserve.model_store.tiers import ModelLoad, Tier, record, recording, seconds_by_tier
from comfyserve.settings import CloudWorkerSettings

SHA = "0" * 64


def test_copy_is_exact_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    dst = tmp_path / "out" / "dst.bin"
    assert copy_file(src, dst, "me") == src.stat().st_size
    assert sha256_file(dst) == sha256_file(src)
    assert sorted(p.name for p in dst.parent.iterdir()) == ["dst.bin"]


def test_a_failed_copy_leaves_neither_the_file_nor_its_temporary(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "missing.bin", tmp_path / "dst.bin", "me")
    assert list(tmp_path.iterdir()) == []


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    holder = LeaseLock(path, stale_after_s=5)
    holder.acquire()
    assert path.read_text() == holder.holder
    waiter = LeaseLock(path, stale_after_s=5, timeout_s=0.3)
    with pytest.raises(LockTimeout, match=f"held by {holder.holder}"):
        waiter.acquire()
    holder.release()
    assert not path.exists()
    with LeaseLock(path, stale_after_s=5) as again:
        assert again.taken_over is None


def test_a_live_holder_keeps_its_lock_by_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    with LeaseLock(path, stale_after_s=0.3, heartbeat_s=0.05) as holder:
        waiter = LeaseLock(path, stale_after_s=0.3, timeout_s=1.0)
        with pytest.raises(LockTimeout):
            waiter.acquire()  # three times the stale window, never taken over
        assert path.read_text() == holder.holder and not holder.lost


def test_a_lock_without_heartbeat_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "m.lock"
    path.write_text("dead-holder")  # what a SIGKILLed holder leaves behind
    with LeaseLock(path, stale_after_s=0.2, timeout_s=5) as taker:
        assert taker.taken_over == "dead-holder"
        assert path.read_text() == taker.holder
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _fill(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_nvme_cache_evicts_least_recently_used_by_bytes(tmp_path: Path) -> None:
    efs = tmp_path / "efs"
    files = {n: _fill(efs / f"{n}.safetensors", 100) for n in "abcd"}
    cache = LocalCache(tmp_path / "nvme", budget_bytes=250)
    for n in "ab":
        with cache.pinned(n):
            assert cache.admit(n, files[n], 100) == tmp_path / "nvme" / n
    assert cache.lookup("a", 100) is not None  # a is now more recent than b
    with cache.pinned("c"):
        cache.admit("c", files["c"], 100)
    assert cache.cached() == ["a", "c"] and cache.used_bytes() == 200
    assert not (tmp_path / "nvme" / "b").exists() and cache.evictions == 1


def test_nvme_cache_removes_the_folders_an_eviction_empties(tmp_path: Path) -> None:
    src = _fill(tmp_path / "efs" / "a.safetensors", 100)
    cache = LocalCache(tmp_path / "nvme", budget_bytes=100)
    cache.admit("checkpoints/v1/a.safetensors", src, 100)
    cache.admit("checkpoints/v2/a.safetensors", src, 100)
    assert [p.name for p in (tmp_path / "nvme" / "checkpoints").iterdir()] == ["v2"]


def test_nvme_cache_never_evicts_a_pinned_file_and_skips_what_cannot_fit(tmp_path: Path) -> None:
    efs = tmp_path / "efs"
    files = {n: _fill(efs / f"{n}.safetensors", 100) for n in "abc"}
    big = _fill(efs / "big.safetensors", 300)
    cache = LocalCache(tmp_path / "nvme", budget_bytes=250)
    with cache.pinned("a"), cache.pinned("b"):
        cache.admit("a", files["a"], 100)
        cache.admit("b", files["b"], 100)
        with cache.pinned("c"):
            assert cache.admit("c", files["c"], 100) is None  # a and b are in use
        assert cache.admit("big", big, 300) is None  # over the whole budget
    assert cache.cached() == ["a", "b"]
    assert sorted(p.name for p in (tmp_path / "nvme").iterdir()) == ["a", "b"]


def test_nvme_cache_index_survives_a_restart_and_drops_wrong_sizes(tmp_path: Path) -> None:
    root = tmp_path / "nvme"
    _fill(root / "old", 100)
    os.utime(root / "old", ns=(1, (root / "old").stat().st_mtime_ns))  # least recently used: oldest atime
    _fill(root / "new", 100)
    _fill(root / ".x.someone.part", 50)  # a copy a crashed process left
    cache = LocalCache(root, budget_bytes=1000)
    assert cache.cached() == ["old", "new"]
    assert not (root / ".x.someone.part").exists()
    assert cache.lookup("old", 99) is None and not (root / "old").exists()


def test_published_inventory_round_trip_and_version() -> None:
    entry = ModelEntry(name="a.safetensors", size=3, sha256=SHA, etag='"e"')
    inventory = PublishedInventory.build({"checkpoints": [entry], "loras": []})
    again = PublishedInventory.model_validate_json(inventory.model_dump_json())
    assert again == inventory and again.folders == {"checkpoints": [entry]}
    assert again.entry("checkpoints", "a.safetensors") == entry and again.entry("vae", "a.safetensors") is None
    assert PublishedInventory.build({"checkpoints": [entry]}).version == inventory.version
    other = PublishedInventory.build({"checkpoints": [entry.model_copy(update={"size": 4})]})
    assert other.version != inventory.version


def test_published_inventory_rejects_a_bad_checksum_and_names_outside_the_folder() -> None:
    with pytest.raises(ValueError, match="sha256"):
        ModelEntry(name="a.safetensors", size=3, sha256="abc")
    for name in ("../x.safetensors", "/etc/x.safetensors", "a/../../x.safetensors", "a\\x.safetensors"):
        with pytest.raises(ValueError, match=r"must be a relative path without '\.\.'"):
            ModelEntry(name=name, size=3, sha256=SHA)
    assert ModelEntry(name="sd/xl/a.safetensors", size=3, sha256=SHA).s3_key("loras") == "loras/sd/xl/a.safetensors"


def _loader(ckpt: str) -> dict[str, object]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }


def test_listed_inventory_validates_names_and_follows_its_listing() -> None:
    listings = [{"checkpoints": ["a.safetensors"]}]
    inventory = ListedInventory(lambda: listings[-1])
    specs = Catalog.packaged().specs
    unknown = validate_prompt(_loader("b.safetensors"), specs, inventory=inventory, strict=False)
    error = unknown.node_errors["1"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert "b.safetensors" in error["details"] and "a.safetensors" in error["details"]
    assert validate_prompt(_loader("a.safetensors"), specs, inventory=inventory).ok
    listings.append({"checkpoints": ["a.safetensors", "b.safetensors"]})
    assert inventory.has("checkpoints", "b.safetensors")
    assert inventory.names("checkpoints") == ["a.safetensors", "b.safetensors"]


def test_local_store_resolves_through_a_store_inventory(tmp_path: Path) -> None:
    _fill(tmp_path / "checkpoints" / "a.safetensors", 10)
    inventory = StoreInventory(LocalModelStore(tmp_path))
    assert inventory.names("checkpoints") == ["a.safetensors"]
    with resolve(inventory, "checkpoints", "a.safetensors") as found:
        assert (found.path, found.tier) == (tmp_path / "checkpoints" / "a.safetensors", Tier.LOCAL)
    with pytest.raises(FileNotFoundError, match=r"'b\.safetensors' is not in the checkpoints folder"):
        inventory.path("checkpoints", "b.safetensors")
    plain = ModelInventory.scan(tmp_path)
    with resolve(plain, "checkpoints", "a.safetensors") as found:
        assert found.tier is Tier.LOCAL


def test_loads_are_recorded_per_run_and_summed_by_tier() -> None:
    record(ModelLoad(model="checkpoints/x", tier=Tier.S3, fetch_s=1, load_s=1))  # outside a run: dropped
    with recording() as loads:
        worker = threading.Thread(
            target=lambda: record(ModelLoad(model="vae/y", tier=Tier.NVME, fetch_s=0.5, load_s=0.25))
        )
        record(ModelLoad(model="checkpoints/x", tier=Tier.S3, fetch_s=2, load_s=1))
        record(ModelLoad(model="checkpoints/x", tier=Tier.RAM, fetch_s=0, load_s=0))
        worker.start()
        worker.join()  # a plain thread does not share the run's context
    assert [load.tier for load in loads] == [Tier.S3, Tier.RAM]
    assert seconds_by_tier(loads) == {"s3": 3.0, "ram": 0.0}


def test_settings_read_the_shared_environment_names(tmp_path: Path) -> None:
    env = {
        "COMFYSERVE_MODELS_BUCKET": "models",
        "COMFYSERVE_MODEL_ROOT": str(tmp_path),
        "COMFYSERVE_LOCAL_CACHE_BYTES": "1000",
        "COMFYSERVE_LOCAL_CACHE_DIR": str(tmp_path / "nvme"),
        "COMFYSERVE_QUEUE_URL": "not the model store's",
    }
    settings = ModelStoreSettings.from_env(env)
    assert settings.models_bucket == "models" and settings.inventory_key == "inventory.json"
    assert (settings.model_root, settings.local_cache_bytes) == (tmp_path, 1000)
    with pytest.raises(ValueError, match="COMFYSERVE_LOCAL_CACHE_BYTES: input should be greater than or equal to 0"):
        ModelStoreSettings.from_env({"COMFYSERVE_LOCAL_CACHE_BYTES": "-1"})
    worker = CloudWorkerSettings.from_env(
        {
            **env,
            "COMFYSERVE_BUCKET": "b",
            "COMFYSERVE_QUEUE_URL": "q",
            "COMFYSERVE_TABLE": "t",
            "COMFYSERVE_EVENT_BUS": "e",
        }
    )
    assert isinstance(worker_inventory(worker).store, LocalModelStore) is False  # a bucket: the tiered store
    plain = ModelStoreSettings.from_env({"COMFYSERVE_MODEL_ROOT": str(tmp_path)})
    assert isinstance(worker_inventory(plain).store, LocalModelStore)


def test_temp_names_are_hidden_beside_the_file(tmp_path: Path) -> None:
    assert temp_name(tmp_path / "a.safetensors", "h1") == tmp_path / ".a.safetensors.h1.part"


def test_the_model_store_is_light_enough_for_a_lambda() -> None:
    probe = (
        "import sys\n"
        "import comfyserve.model_store.settings, comfyserve.model_store.sync, comfyserve.model_store.preload\n"
        "import comfyserve.commands.models\n"
        "print(sorted(m for m in ('torch', 'numpy', 'diffusers', 'transformers', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
