"""comfyserve-prepare (infra/host/prepare.py) against fakes of what it calls: the aws and docker commands, and an
IMDSv2 service on loopback. No AWS."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.host import prepare
from infra.host.prepare import ABANDON, CONTINUE, Host, PrepareError

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-hnb659fds-container-assets:abc123"
REGISTRY = IMAGE.split("/")[0]
CHECKPOINT = b"weights" * 1000


class FakeHost(Host):
    """Answers the commands like the aws and docker tools would; records every call. ``fail``: a command that
    fails (``fail_times`` times, then works)."""

    def __init__(
        self, state: str, *, fail: str | None = None, fail_times: int = 1000, models: dict[str, bytes] | None = None
    ) -> None:
        super().__init__()
        self.state = state
        self.fail = fail
        self.fail_times = fail_times
        self.models = models or {}
        self.calls: list[tuple[str, ...]] = []
        self.stdin: list[str | None] = []

    def metadata(self, path: str) -> str:
        assert path == "/latest/meta-data/instance-id"
        return "i-0abc"

    def run(self, *command: str, stdin: str | None = None) -> str:
        self.calls.append(command)
        self.stdin.append(stdin)
        if self.fail and self.fail in " ".join(command) and self.fail_times > 0:
            self.fail_times -= 1
            raise PrepareError(f"{' '.join(command[:3])} failed (1): simulated")
        if command[:2] == ("aws", "autoscaling") and command[2] == "describe-auto-scaling-instances":
            listed = [{"AutoScalingGroupName": "comfyserve-g6", "LifecycleState": self.state}] if self.state else []
            return json.dumps({"AutoScalingInstances": listed})
        if command[:3] == ("aws", "ecr", "get-login-password"):
            return "secret-token"
        if command[:3] == ("aws", "s3", "cp"):
            key = command[3].split("/", 3)[3]
            if command[4] == "-":
                return json.dumps(_inventory(self.models))
            Path(command[4]).write_bytes(self.models[key])
        return ""

    def commands(self) -> list[str]:
        return [" ".join(call[:3]) for call in self.calls]


def _inventory(models: dict[str, bytes]) -> dict[str, Any]:
    folders: dict[str, list[dict[str, Any]]] = {}
    for key, data in models.items():
        folder, name = key.split("/", 1)
        entry = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        folders.setdefault(folder, []).append(entry)
    return {"schema_version": 1, "folders": folders}


def _config(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return {
        "region": "us-east-1",
        "hook_name": "comfyserve-prepare",
        "image": IMAGE,
        "registry": REGISTRY,
        "hot_dir": str(tmp_path / "hot"),
        "hot_models": [],
        "models_bucket": "models-bucket",
        "inventory_key": "inventory.json",
        "owner_uid": str(os.getuid()),
        "cloudwatch_agent_config": None,
        **changes,
    }


def _completed(host: FakeHost) -> str:
    (call,) = [c for c in host.calls if c[:3] == ("aws", "autoscaling", "complete-lifecycle-action")]
    options = dict(zip(call[3::2], call[4::2], strict=True))
    assert options["--auto-scaling-group-name"] == "comfyserve-g6"
    assert options["--lifecycle-hook-name"] == "comfyserve-prepare"
    assert options["--instance-id"] == "i-0abc"
    return options["--lifecycle-action-result"]


def test_a_pool_instance_pulls_the_image_with_a_registry_login_then_continues(tmp_path: Path) -> None:
    host = FakeHost(prepare.PREPARING)
    assert prepare.main(host, _config(tmp_path)) == CONTINUE
    assert host.commands() == [
        "aws autoscaling describe-auto-scaling-instances",
        "aws ecr get-login-password",
        "docker login --username",
        "docker pull " + IMAGE,
        "docker logout " + REGISTRY,
        "aws autoscaling complete-lifecycle-action",
    ]
    assert host.stdin[2] == "secret-token"  # the password goes through stdin, never the command line
    assert _completed(host) == CONTINUE
    assert (tmp_path / prepare.MARKER).read_text(encoding="utf-8").strip() == IMAGE


def test_leaving_the_pool_completes_at_once_and_pulls_nothing(tmp_path: Path) -> None:
    host = FakeHost(prepare.LEAVING_POOL)
    assert prepare.main(host, _config(tmp_path)) == CONTINUE
    assert host.commands() == [
        "aws autoscaling describe-auto-scaling-instances",
        "aws autoscaling complete-lifecycle-action",
    ]


def test_a_reboot_in_service_completes_nothing(tmp_path: Path) -> None:
    host = FakeHost("InService")
    assert prepare.main(host, _config(tmp_path)) == ""
    assert host.commands() == ["aws autoscaling describe-auto-scaling-instances"]


def test_a_failed_pull_abandons_the_instance_and_logs_out(tmp_path: Path) -> None:
    host = FakeHost(prepare.PREPARING, fail="docker pull")
    assert prepare.main(host, _config(tmp_path)) == ABANDON
    assert _completed(host) == ABANDON
    assert "docker logout " + REGISTRY in host.commands()
    assert not (tmp_path / prepare.MARKER).exists()  # a later boot would not count it as prepared


def test_hot_models_land_where_the_nvme_cache_looks_and_are_verified(tmp_path: Path) -> None:
    models = {"checkpoints/sdxl.safetensors": CHECKPOINT, "loras/style/detail.safetensors": b"lora"}
    host = FakeHost(prepare.PREPARING, models=models)
    config = _config(tmp_path, hot_models=list(models))
    assert prepare.main(host, config) == CONTINUE
    sha = hashlib.sha256(CHECKPOINT).hexdigest()
    staged = tmp_path / "hot" / "checkpoints" / sha[:16] / "sdxl.safetensors"
    assert staged.read_bytes() == CHECKPOINT
    assert (tmp_path / "hot" / "loras" / hashlib.sha256(b"lora").hexdigest()[:16] / "style/detail.safetensors").exists()
    copies = [call for call in host.calls if call[:3] == ("aws", "s3", "cp")]
    assert [call[3] for call in copies] == [
        "s3://models-bucket/inventory.json",
        "s3://models-bucket/checkpoints/sdxl.safetensors",
        "s3://models-bucket/loras/style/detail.safetensors",
    ]


def test_a_model_that_does_not_match_the_inventory_abandons(tmp_path: Path) -> None:
    class Corrupting(FakeHost):
        def run(self, *command: str, stdin: str | None = None) -> str:
            answer = super().run(*command, stdin=stdin)
            if command[:3] == ("aws", "s3", "cp") and command[4] != "-":
                Path(command[4]).write_bytes(b"truncated")
            return answer

    host = Corrupting(prepare.PREPARING, models={"checkpoints/sdxl.safetensors": CHECKPOINT})
    assert prepare.main(host, _config(tmp_path, hot_models=["checkpoints/sdxl.safetensors"])) == ABANDON
    assert not list((tmp_path / "hot").rglob("*.safetensors"))  # the bad copy is gone


def test_a_hot_model_missing_from_the_inventory_is_named() -> None:
    with pytest.raises(PrepareError, match=r"hot model checkpoints/gone.safetensors is not in the published inventory"):
        prepare.hot_model_paths(_inventory({"checkpoints/a.safetensors": b"a"}), ["checkpoints/gone.safetensors"])


def test_gpu_metrics_are_best_effort(tmp_path: Path) -> None:
    host = FakeHost(prepare.PREPARING, fail="dnf install")
    config = _config(tmp_path, cloudwatch_agent_config="/etc/comfyserve/cloudwatch-agent.json")
    assert prepare.main(host, config) == CONTINUE  # a host without GPU metrics still serves jobs
    assert "dnf install -y" in host.commands()


def test_an_instance_no_group_lists_is_left_alone_after_waiting(tmp_path: Path) -> None:
    host = FakeHost("")
    assert prepare.main(host, _config(tmp_path), wait_s=0.05, poll_s=0.01) == ""
    assert set(host.commands()) == {"aws autoscaling describe-auto-scaling-instances"}
    assert len(host.calls) >= 2  # it asked again before giving up


def test_a_refused_auto_scaling_call_is_made_again(tmp_path: Path) -> None:
    host = FakeHost(prepare.LEAVING_POOL, fail="complete-lifecycle-action", fail_times=2)
    assert prepare.main(host, _config(tmp_path), poll_s=0.01) == CONTINUE
    assert host.commands().count("aws autoscaling complete-lifecycle-action") == 3


def test_an_auto_scaling_call_refused_past_the_deadline_fails_the_run(tmp_path: Path) -> None:
    host = FakeHost(prepare.LEAVING_POOL, fail="describe-auto-scaling-instances")
    with pytest.raises(PrepareError, match="simulated"):
        prepare.main(host, _config(tmp_path), wait_s=0.05, poll_s=0.01)


class _Imds(BaseHTTPRequestHandler):
    """IMDSv2: a PUT for a token, then GETs that carry it."""

    def do_PUT(self) -> None:
        assert self.path == "/latest/api/token" and self.headers["X-aws-ec2-metadata-token-ttl-seconds"]
        self._answer(200, b"token-1")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
            self._answer(401, b"")
        else:
            self._answer(200, b"i-0abc" if self.path == "/latest/meta-data/instance-id" else b"")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def imds() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Imds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_metadata_reads_go_through_an_imdsv2_token(imds: str) -> None:
    assert Host(imds=imds).metadata("/latest/meta-data/instance-id") == "i-0abc"


def test_a_failing_command_names_itself_with_its_last_error_line() -> None:
    with pytest.raises(PrepareError, match=r"^sh -c echo first >&2; echo second >&2; exit 3 failed \(3\): second$"):
        Host().run("sh", "-c", "echo first >&2; echo second >&2; exit 3")


def test_the_script_parses_as_python_3_9_the_hosts_own_interpreter() -> None:
    source = Path(prepare.__file__).read_text(encoding="utf-8")
    ast.parse(source, feature_version=(3, 9))
    assert "boto3" not in source  # the standard library and the aws and docker commands only
