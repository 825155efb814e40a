"""The GPU image, checked without Docker: the Dockerfile lints clean, the committed requirements lock covers every
runtime dependency with torch's CUDA build matching the base image, the image's custom_nodes load under the
allow/deny lists, and the ``comfyui`` target carries a pinned ComfyUI with the locked nodes and its catalog.
(The lock itself is resolved against PyPI by `make gpu-lock`; tests never leave loopback.)"""

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
from comfyserve.worker.comfyui.nodes_lock import parse_lock

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


def stages() -> dict[str, str]:
    """Each stage's text by its name, in the Dockerfile's order."""
    parts = re.split(r"^FROM (\S+) AS (\S+)$", (CONTAINER / "Dockerfile").read_text(), flags=re.MULTILINE)[1:]
    return {name: f"FROM {base}\n{body}" for base, name, body in zip(*[iter(parts)] * 3, strict=True)}


def instructions(stage: str) -> list[str]:
    return [line for line in stage.splitlines()[1:] if line.strip() and not line.startswith("#")]


def test_the_default_target_stays_the_builtin_only_runtime_image() -> None:
    found = stages()
    assert list(found) == ["build", "runtime", "comfyui-build", "comfyui", "builtin"]
    assert found["builtin"].startswith("FROM runtime\n") and instructions(found["builtin"]) == []  # last: default
    for stage in ("build", "runtime"):
        assert "comfyui" not in "\n".join(instructions(found[stage])).lower()


def test_the_comfyui_target_carries_a_pinned_comfyui_with_the_locked_nodes_and_its_catalog() -> None:
    found = stages()
    build, image = found["comfyui-build"], found["comfyui"]
    assert build.startswith("FROM build\n")  # the worker's environment, for the comfyserve commands
    assert re.search(r"^ARG COMFYUI_REF=[0-9a-f]{40}$", build, re.MULTILINE)
    assert 'git fetch --quiet --depth 1 "${COMFYUI_REPO}" "${COMFYUI_REF}"' in build
    assert "WORKDIR /opt/ComfyUI" in build and "python3 -m venv /opt/ComfyUI/venv" in build
    assert "/opt/ComfyUI/venv/bin/pip install --require-hashes --no-deps -r /tmp/cuda-stack.txt" in build
    assert "-c /tmp/constraints.txt" in build
    assert "comfyserve nodes install /opt/comfyserve/custom_nodes.lock --comfyui-dir /opt/ComfyUI" in build
    assert "comfyserve catalog --from-comfyui /opt/ComfyUI > /opt/comfyserve/catalog.json" in build
    assert image.startswith("FROM runtime\n")  # uid 10001, the health check and the entrypoint come with it
    assert "USER" not in image
    assert "COPY --from=comfyui-build /opt/ComfyUI /opt/ComfyUI" in image
    assert "/opt/comfyserve/catalog.json /opt/comfyserve/" in image
    assert re.search(r"COMFYSERVE_BACKEND=comfyui \\\n\s+COMFYUI_DIR=/opt/ComfyUI", image)
    commands = "\n".join(instructions(build) + instructions(image))
    assert not re.search(r"(models|\.safetensors|\.ckpt|\.pth)", commands)  # no models baked in


def test_comfyuis_environment_gets_the_locks_cuda_torch_hash_checked_and_every_pin_as_a_constraint() -> None:
    stack, constraints = lock_script().comfyui_pins((CONTAINER / "requirements.txt").read_text())
    lock = pins()
    hashed = dict(re.findall(r"^([a-z0-9-]+)==\S+ \\\n    --hash=sha256:([0-9a-f]{64})$", stack, re.MULTILINE))
    assert {"torch", "triton", "nvidia-cuda-runtime"} <= set(hashed)
    assert all(name == "torch" or name.startswith(("nvidia-", "cuda-", "triton")) for name in hashed)
    assert all(lock[name][1] == sha256 for name, sha256 in hashed.items())
    assert constraints.splitlines() == [f"{name}=={version}" for name, (version, _) in lock.items()]


def test_the_custom_nodes_lock_parses_and_its_example_is_a_valid_pack() -> None:
    text = (CONTAINER / "custom_nodes.lock").read_text()
    assert parse_lock(text) == []  # the team's packs go here; none by default
    example = "\n".join(line.removeprefix("# ") for line in text.splitlines() if re.match(r"# (\[\[|\w+ = )", line))
    [pack] = parse_lock(example)
    assert pack.name == "ComfyUI_essentials" and len(pack.commit) == 40
