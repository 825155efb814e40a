"""The GPU image, checked without Docker: the Dockerfile lints clean, the committed requirements lock covers every
runtime dependency with torch's CUDA build matching the base image, and the image's custom_nodes load under the
allow/deny lists. (The lock itself is resolved against PyPI by `make gpu-lock`; tests never leave loopback.)"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

from comfyserve.settings import CloudWorkerSettings
from comfyserve.worker.cloud import node_registry

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "gpu_container"
HADOLINT = Path(sys.executable).parent / "hadolint"
RESOURCES = {"bucket": "b", "queue_url": "q", "table": "t", "event_bus": "e"}


def lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_lock", CONTAINER / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins() -> dict[str, tuple[str, str]]:
    """name -> (version, sha256) from the committed lock."""
    text = (CONTAINER / "requirements.txt").read_text()
    found = re.findall(r"^([a-z0-9-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", text, re.MULTILINE)
    assert len(found) == len([line for line in text.splitlines() if line and not line.startswith(("#", " "))])
    return {name: (version, sha256) for name, version, sha256 in found}


def test_dockerfile_lints_clean() -> None:
    result = subprocess.run([str(HADOLINT), str(CONTAINER / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_worker_as_a_non_root_user_with_a_health_check() -> None:
    text = (CONTAINER / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{CUDA_IMAGE\} AS build$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\} AS runtime$", text, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["comfyserve", "worker"]' in text
    assert 'CMD ["comfyserve", "worker", "--health"]' in text
    assert "--require-hashes" in text
    assert not re.search(r"^(COPY|ADD) .*(models|\.safetensors|\.ckpt)", text, re.MULTILINE)  # no models baked in


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    lock, script = pins(), lock_script()
    for line in script.runtime_requirements():
        requirement = Requirement(line.split("#")[0])
        name = script.canonical_name(requirement.name)
        assert name in lock, f"{name} is not in gpu_container/requirements.txt (make gpu-lock)"
        assert requirement.specifier.contains(lock[name][0], prereleases=True), (name, lock[name][0])


def test_lock_pins_torchs_cuda_build_matching_the_base_image() -> None:
    lock = pins()
    assert "torch" in lock and "+cpu" not in lock["torch"][0]
    runtime = [(name, version) for name, (version, _) in lock.items() if name.startswith("nvidia-cuda-runtime")]
    assert len(runtime) == 1, "torch's CUDA build pulls in the CUDA runtime wheel"
    name, version = runtime[0]
    cuda_major = name.rpartition("-cu")[2] if re.search(r"-cu\d+$", name) else version.split(".")[0]
    base = re.search(
        r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.\d+\.\d+-runtime-", (CONTAINER / "Dockerfile").read_text(), re.M
    )
    assert base is not None and base.group(1) == cuda_major


def test_the_images_custom_nodes_load_under_the_allowlist() -> None:
    packs = ("comfyserve.nodes.primitives",)
    folder = str(CONTAINER / "custom_nodes")
    everything = node_registry(CloudWorkerSettings(**RESOURCES, custom_nodes=(folder,)), packs)
    allowed = node_registry(
        CloudWorkerSettings(**RESOURCES, custom_nodes=(folder,), node_allow=("TextJoin", "PrimitiveInt")), packs
    )
    denied = node_registry(CloudWorkerSettings(**RESOURCES, custom_nodes=(folder,), node_deny=("TextJoin",)), packs)

    assert everything.failures == [] and "TextJoin" in everything.classes
    assert sorted(allowed.classes) == ["PrimitiveInt", "TextJoin"]
    assert "TextJoin" not in denied.classes and "PrimitiveInt" in denied.classes
    join = everything.classes["TextJoin"]()
    assert join.join("a", "b", "-") == ("a-b",)
