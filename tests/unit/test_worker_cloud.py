"""The worker's composition root, piece by piece: the backend it builds from the settings, preloading for a
backend in another process, and the worker id from the ECS task metadata endpoint."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from comfyserve.model_store.errors import ModelStoreError
from comfyserve.model_store.store import LocalModelStore, StoreInventory
from comfyserve.settings import CloudWorkerSettings
from comfyserve.worker.builtin_backend import BuiltinBackend
from comfyserve.worker.cloud import (
    build_backend,
    default_worker_id,
    node_registry,
    preload_models,
    publish_served_catalog,
)
from comfyserve.worker.comfyui import ComfyUIBackend
from comfyserve.worker.comfyui.config import ComfyUIError
from comfyserve.worker.liveness import Liveness
from tests.loopback import QuietHandler, base_url, serving

RESOURCES = {"bucket": "b", "queue_url": "q", "table": "t", "event_bus": "e"}


def comfyui_settings(tmp_path: Path, **fields: Any) -> CloudWorkerSettings:
    checkout, models, nodes = tmp_path / "ComfyUI", tmp_path / "models", tmp_path / "nodes"
    for folder in (checkout, models / "upscale_models", nodes):
        folder.mkdir(parents=True)
    (checkout / "main.py").write_text("")
    return CloudWorkerSettings(
        **RESOURCES,
        backend="comfyui",
        comfyui_dir=checkout,
        model_root=models,
        work_dir=tmp_path / "work",
        custom_nodes=(str(nodes),),
        **fields,
    )


def test_the_comfyui_backend_gets_the_workers_folders_and_lists(tmp_path: Path) -> None:
    settings = comfyui_settings(tmp_path, node_deny=("SaveImageWebsocket",))
    backend = build_backend(settings, StoreInventory(LocalModelStore(settings.model_root)))

    assert isinstance(backend, ComfyUIBackend) and not backend.process.alive()  # built, not started
    config = backend.config
    assert (config.comfyui_dir, config.model_root) == ((tmp_path / "ComfyUI").resolve(), (tmp_path / "models"))
    assert config.work_dir == (tmp_path / "work" / "comfyui").resolve()
    assert config.custom_nodes == ((tmp_path / "nodes").resolve(),)
    assert (config.node_allow, config.node_deny) == (None, ("SaveImageWebsocket",))


def test_preloading_for_comfyui_makes_files_local_without_loading_them(tmp_path: Path) -> None:
    settings = comfyui_settings(tmp_path, preload=("upscale_models/x4.pth", "checkpoints/sd.safetensors"))
    (settings.model_root / "upscale_models" / "x4.pth").write_bytes(b"weights")
    (settings.model_root / "checkpoints").mkdir()
    (settings.model_root / "checkpoints" / "sd.safetensors").write_bytes(b"not loadable: only made local")
    inventory = StoreInventory(LocalModelStore(settings.model_root))

    assert set(preload_models(settings, inventory)) == {"local"}
    missing = settings.model_copy(update={"preload": ("upscale_models/absent.pth",)})
    with pytest.raises(ModelStoreError, match=r"preloading upscale_models/absent\.pth failed"):
        preload_models(missing, inventory)


class _Metadata(QuietHandler):
    def do_GET(self) -> None:
        body = json.dumps({"TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/gpu/0f1e2d3c4b5a"}).encode()
        self.send_response(200 if self.path == "/v4/abc/task" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def metadata() -> Iterator[str]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)) as server:
        yield base_url(server) + "/v4/abc"


def test_the_worker_id_is_the_ecs_task_id(metadata: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", metadata)
    assert default_worker_id() == "0f1e2d3c4b5a"
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", metadata + "/gone")  # 404: the host name and pid
    assert default_worker_id().endswith(f":{os.getpid()}")
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4")
    assert default_worker_id().endswith(f":{os.getpid()}")


class _Blobs:
    def __init__(self) -> None:
        self.puts: dict[str, bytes] = {}

    def put(self, key: str, data: bytes, content_type: str = "") -> None:
        self.puts[key] = data


class _Backend:
    name = "builtin"

    def __init__(self, object_info: dict[str, Any] | Exception) -> None:
        self._object_info = object_info

    def object_info(self) -> dict[str, Any]:
        if isinstance(self._object_info, Exception):
            raise self._object_info
        return self._object_info


def test_the_served_catalog_is_published_and_a_failure_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    blobs = _Blobs()
    served = BuiltinBackend(node_registry(CloudWorkerSettings(**RESOURCES), ("comfyserve.nodes.primitives",)))
    publish_served_catalog(served, blobs, "catalog/served.json")  # type: ignore[arg-type]
    assert set(json.loads(blobs.puts["catalog/served.json"])) == set(served.object_info())

    broken = _Backend(ComfyUIError("ComfyUI answered /object_info with HTTP 500"))
    publish_served_catalog(broken, blobs, "catalog/broken.json")  # type: ignore[arg-type]
    assert "catalog/broken.json" not in blobs.puts
    assert "the node catalog was not published: ComfyUI answered" in caplog.text


def test_the_worker_stays_alive_through_a_cold_start_longer_than_its_window(tmp_path: Path) -> None:
    """ECS judges health at most 300 s after a task starts; a long model copy must not look like a hang."""
    (tmp_path / "work").mkdir()
    liveness = Liveness(CloudWorkerSettings(**RESOURCES, work_dir=tmp_path / "work"))
    liveness.window_s = 0.3
    with liveness.held():
        time.sleep(1.0)  # three windows without a receive or a heartbeat
        assert liveness.healthy()
    time.sleep(0.5)
    assert not liveness.healthy()
