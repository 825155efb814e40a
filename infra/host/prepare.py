#!/usr/bin/env python3
"""comfyserve-prepare: the GPU host's side of the Auto Scaling launch lifecycle hook (docs/DEPLOY.md).

Runs on every boot before the ECS agent (``comfyserve-prepare.service``). When the instance waits at
``Warmed:Pending:Wait`` (being prepared for the warm pool) it pulls the worker image onto the EBS volume, stages
the hot models there (verified against the published inventory's sha256), installs the GPU metrics of the
CloudWatch agent, and completes the action with CONTINUE; any failure completes it with ABANDON, so the group
replaces the instance instead of pooling a half-prepared one. At ``Pending:Wait`` (leaving the pool, or launched
straight into service) it completes at once. In any other state there is nothing to complete.

Written for the host's own python3 (Amazon Linux 2023: 3.9), the standard library and the aws and docker
command-line tools; every outside call goes through :class:`Host`, which the tests replace.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

CONFIG = Path("/etc/comfyserve/prepare.json")
IMDS = "http://169.254.169.254"
PREPARING = "Warmed:Pending:Wait"
LEAVING_POOL = "Pending:Wait"
CONTINUE, ABANDON = "CONTINUE", "ABANDON"
MARKER = "prepared"  # written beside the hot folder once the instance is prepared
AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
BUFFER = 8 * 1024 * 1024

T = TypeVar("T")
log = logging.getLogger("comfyserve-prepare")


class PrepareError(Exception):
    """A preparation step failed; the message says which."""


class Host:
    """The instance metadata service and the command-line tools."""

    def __init__(self, imds: str = IMDS, timeout_s: float = 5.0) -> None:
        self.imds = imds
        self.timeout_s = timeout_s

    def metadata(self, path: str) -> str:
        """An IMDSv2 read (a fresh session token each time: the script makes a handful)."""
        put = urllib.request.Request(
            f"{self.imds}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(put, timeout=self.timeout_s) as response:
            token = response.read().decode()
        get = urllib.request.Request(f"{self.imds}{path}", headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(get, timeout=self.timeout_s) as response:
            return str(response.read().decode())

    def run(self, *command: str, stdin: str | None = None) -> str:
        """The command's standard output; :class:`PrepareError` with its last error line when it fails."""
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PrepareError(f"{' '.join(command[:3])} failed ({done.returncode}): {tail}")
        return done.stdout


def lifecycle(host: Host, region: str, instance_id: str) -> tuple[str, str]:
    """(Auto Scaling group, lifecycle state) of this instance; ("", "") when no group knows it."""
    answer = host.run(
        "aws",
        "autoscaling",
        "describe-auto-scaling-instances",
        "--region",
        region,
        "--instance-ids",
        instance_id,
        "--output",
        "json",
    )
    instances = json.loads(answer).get("AutoScalingInstances", [])
    if not instances:
        return "", ""
    return str(instances[0]["AutoScalingGroupName"]), str(instances[0]["LifecycleState"])


def pull_image(host: Host, config: dict[str, Any]) -> None:
    """The worker image onto the instance's disk (the ECS agent then finds it: prefer-cached)."""
    registry = config.get("registry")
    if registry:
        password = host.run("aws", "ecr", "get-login-password", "--region", config["region"])
        host.run("docker", "login", "--username", "AWS", "--password-stdin", registry, stdin=password)
    try:
        host.run("docker", "pull", config["image"])
    finally:
        if registry:
            host.run("docker", "logout", registry)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(BUFFER), b""):
            digest.update(block)
    return digest.hexdigest()


def hot_model_paths(inventory: dict[str, Any], names: list[str]) -> list[tuple[str, str, int, str]]:
    """(S3 key, path under the hot folder, size, sha256) of each "<folder>/<name>": the path is the one the
    worker's NVMe cache uses (``<folder>/<sha256[:16]>/<name>``), so the cache finds the staged file as its own."""
    found = []
    for model in names:
        folder, name = model.split("/", 1)
        entries = inventory.get("folders", {}).get(folder, [])
        entry = next((e for e in entries if e.get("name") == name), None)
        if entry is None:
            raise PrepareError(f"hot model {model} is not in the published inventory")
        key = entry.get("key") or f"{folder}/{name}"
        found.append((key, f"{folder}/{entry['sha256'][:16]}/{name}", int(entry["size"]), entry["sha256"]))
    return found


def stage_models(host: Host, config: dict[str, Any], hot_dir: Path) -> None:
    """The hot models onto the EBS volume, each checked against the inventory's size and sha256."""
    bucket, region = config["models_bucket"], config["region"]
    inventory = json.loads(
        host.run("aws", "s3", "cp", f"s3://{bucket}/{config['inventory_key']}", "-", "--region", region)
    )
    owner = int(config["owner_uid"])
    for key, relative, size, sha256 in hot_model_paths(inventory, list(config["hot_models"])):
        target = hot_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        host.run("aws", "s3", "cp", f"s3://{bucket}/{key}", str(target), "--region", region, "--only-show-errors")
        if target.stat().st_size != size or _sha256(target) != sha256:
            target.unlink()
            raise PrepareError(f"s3://{bucket}/{key} does not match the inventory's size and sha256")
    for path in [hot_dir, *hot_dir.rglob("*")]:
        os.chown(path, owner, owner)  # the worker's NVMe cache touches a file's access time on a hit


def install_gpu_metrics(host: Host, config: dict[str, Any]) -> None:
    """The CloudWatch agent with its nvidia_gpu metrics (its config is written by the user data), once per
    instance. Best effort: a host without GPU metrics still serves jobs."""
    agent = config.get("cloudwatch_agent_config")
    if not agent or Path(AGENT_CTL).exists():
        return
    try:
        host.run("dnf", "install", "-y", "-q", "amazon-cloudwatch-agent")
        host.run(AGENT_CTL, "-a", "fetch-config", "-m", "ec2", "-s", "-c", f"file:{agent}")
    except PrepareError as exc:
        log.warning("no GPU metrics on this host: %s", exc)


def prepare(host: Host, config: dict[str, Any]) -> None:
    """Everything a warm-pool instance needs before it stops; done once (a marker records it)."""
    hot_dir = Path(config["hot_dir"])
    marker = hot_dir.parent / MARKER
    if marker.exists():
        return
    hot_dir.mkdir(parents=True, exist_ok=True)
    pull_image(host, config)
    if config.get("hot_models"):
        stage_models(host, config, hot_dir)
    install_gpu_metrics(host, config)
    marker.write_text(config["image"] + "\n", encoding="utf-8")


def main(host: Host, config: dict[str, Any], wait_s: float = 120.0, poll_s: float = 5.0) -> str:
    """What this boot completed the lifecycle action with ("" when there was none to complete)."""
    region = config["region"]
    instance_id = host.metadata("/latest/meta-data/instance-id")
    deadline = time.monotonic() + wait_s
    group, state = _retrying(lambda: lifecycle(host, region, instance_id), deadline, poll_s)
    while not group and time.monotonic() < deadline:  # a new instance can take a moment to be listed
        time.sleep(poll_s)
        group, state = _retrying(lambda: lifecycle(host, region, instance_id), deadline, poll_s)
    if state not in (PREPARING, LEAVING_POOL):
        log.info("lifecycle state %r: nothing to complete", state)
        return ""
    result = CONTINUE
    if state == PREPARING:
        try:
            prepare(host, config)
        except (PrepareError, OSError, KeyError, ValueError) as exc:
            log.error("preparation failed, abandoning the instance: %s", exc)
            result = ABANDON
    complete = (
        "aws",
        "autoscaling",
        "complete-lifecycle-action",
        "--region",
        region,
        "--auto-scaling-group-name",
        group,
        "--lifecycle-hook-name",
        config["hook_name"],
        "--instance-id",
        instance_id,
        "--lifecycle-action-result",
        result,
    )
    _retrying(lambda: host.run(*complete), time.monotonic() + wait_s, poll_s)
    log.info("%s: %s", state, result)
    if state == LEAVING_POOL:
        install_gpu_metrics(host, config)  # an instance launched straight into service was never prepared
    return result


def _retrying(call: Callable[[], T], deadline: float, pause_s: float) -> T:
    """``call`` again after a failed Auto Scaling call until ``deadline`` (a start from the pool must not wait
    for the hook's timeout over one refused request)."""
    while True:
        try:
            return call()
        except PrepareError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("%s; trying again", exc)
            time.sleep(pause_s)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        main(Host(), json.loads(CONFIG.read_text(encoding="utf-8")))
    except (PrepareError, OSError, ValueError) as error:
        log.error("%s", error)
        sys.exit(1)
