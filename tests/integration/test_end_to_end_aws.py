"""End to end on moto, every hop a real one: a job submitted through Lambda ``api`` (an API Gateway proxy event
with ``requestContext.identity.apiKeyId``) or dropped in the inbox (Lambda ``drop_folder`` fed the S3 "Object
Created" event EventBridge delivered) is received by a real ``comfyserve worker`` process; its outputs and
manifest land in S3; the manifest's "Object Created" event reaches Lambda ``completion``; a subscriber rule on
the ``comfyserve`` bus receives ``Job Succeeded``; a dropped job's results appear in the outbox.

moto delivers rules only to SQS targets, so each rule that targets a Lambda in the stack targets a queue here,
and the test hands the envelopes it holds to that Lambda's handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from comfyserve.adapters.aws.emulator import offline_environment
from comfyserve.adapters.aws.eventbridge import EVENT_SOURCE
from tests.apigw import rest_event
from tests.integration.conftest import REGION, AwsClients
from tests.integration.drop_stack import DropStack
from tests.integration.lambda_events import context, fresh_import
from tests.integration.stack_helpers import ROOT, image_only, wait_for

API_KEY_ID = "e2ekey"  # the tenant: API Gateway's id of the caller's key
MANIFESTS: dict[str, Any] = {
    "source": ["aws.s3"],
    "detail-type": ["Object Created"],
    "detail": {"object": {"key": [{"suffix": "/manifest.json"}]}},
}
SUCCEEDED = {"source": [EVENT_SOURCE], "detail-type": ["Job Succeeded"]}


class Deployment:
    """The stack's data plane on moto, its Lambdas as modules, and one ``comfyserve worker`` process."""

    def __init__(self, stack: DropStack, root: Path) -> None:
        self.stack = stack
        self.root = root
        rule = {**MANIFESTS, "detail": {**MANIFESTS["detail"], "bucket": {"name": [stack.resources.bucket]}}}
        stack.s3.put_bucket_notification_configuration(
            Bucket=stack.resources.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        self.manifest_events = stack.rule_to_queue("default", f"{stack.prefix}-manifests", rule)
        self.subscriber = stack.rule_to_queue(stack.resources.bus, f"{stack.prefix}-subscriber", SUCCEEDED)
        self.lambdas: dict[str, ModuleType] = {}
        self.worker: subprocess.Popen[bytes] | None = None

    def load_lambdas(self, import_api: Callable[[], ModuleType]) -> None:
        with pytest.MonkeyPatch.context() as patch:
            self.stack.setenv(patch, COMFYSERVE_DROP_TENANTS=f"studio:{API_KEY_ID}")
            self.lambdas["api"] = import_api()
            for name in ("completion", "drop_folder"):
                self.lambdas[name] = fresh_import(f"lambdas.{name}")

    def start_worker(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COMFYSERVE_", "AWS_"))}
        env.update(offline_environment(REGION))
        env.update(self.stack.env)
        env.update(
            {
                "COMFYSERVE_MODEL_ROOT": str(self.root / "models"),
                "COMFYSERVE_LOCAL_CACHE_DIR": str(self.root / "cache"),
                "COMFYSERVE_WORK_DIR": str(self.root / "work"),
                "COMFYSERVE_WORKER_ID": "e2e-worker",
                "COMFYSERVE_RECEIVE_WAIT_S": "1",
                "COMFYSERVE_DRAIN_TIMEOUT_S": "10",
                "PYTHONPATH": str(ROOT),
            }
        )
        (self.root / "models").mkdir(exist_ok=True)
        log = (self.root / "worker.log").open("ab")
        command = [sys.executable, "-m", "comfyserve", "worker"]
        self.worker = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            try:
                self.worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()

    def worker_log(self) -> str:
        return (self.root / "worker.log").read_text(errors="replace")

    def call(self, name: str, event: dict[str, Any]) -> Any:
        return self.lambdas[name].handler(event, context(name))

    def pump_completions(self) -> list[str]:
        """Every manifest "Object Created" event delivered so far, handed to Lambda ``completion``."""
        return [self.call("completion", e)["outcome"] for e in self.stack.drain(self.manifest_events)]

    def succeeded(self, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Pump completions until the subscriber rule has delivered ``Job Succeeded`` for ``job_id``."""
        seen: list[dict[str, Any]] = []

        def probe() -> dict[str, Any] | None:
            assert self.worker is not None and self.worker.poll() is None, self.worker_log()[-3000:]
            self.pump_completions()
            seen.extend(self.stack.drain(self.subscriber))
            return next((e for e in seen if e["detail"]["job_id"] == job_id), None)

        return wait_for(probe, timeout_s, f"Job Succeeded for {job_id}")


@pytest.fixture(scope="module")
def deployment(
    moto_endpoint: str,
    aws_session: boto3.Session,
    tmp_path_factory: pytest.TempPathFactory,
    import_lambda_api: Callable[[], ModuleType],
) -> Iterator[Deployment]:
    stack = DropStack(AwsClients(moto_endpoint, aws_session), moto_endpoint)
    cloud = Deployment(stack, tmp_path_factory.mktemp("e2e"))
    cloud.load_lambdas(import_lambda_api)
    cloud.start_worker()
    try:
        yield cloud
    finally:
        cloud.stop_worker()


def test_a_job_submitted_through_the_api_lambda_runs_and_reaches_a_subscriber(deployment: Deployment) -> None:
    submitted = deployment.call(
        "api", rest_event("POST", "/v1/jobs", body={"workflow": image_only()}, api_key_id=API_KEY_ID)
    )
    assert submitted["statusCode"] == 202, submitted["body"]
    job_id = json.loads(submitted["body"])["job_id"]

    event = deployment.succeeded(job_id)

    assert (event["source"], event["detail-type"]) == ("comfyserve.job", "Job Succeeded")
    detail = event["detail"]
    assert (detail["tenant"], detail["status"]) == (API_KEY_ID, "succeeded")
    output_keys = sorted(o["key"] for o in detail["outputs"])
    prefix = f"outputs/{API_KEY_ID}/{job_id}/"
    assert len(output_keys) == 2 and all(key.startswith(prefix) for key in output_keys)
    listed = deployment.stack.s3.list_objects_v2(Bucket=deployment.stack.resources.bucket, Prefix=prefix)
    assert sorted(item["Key"] for item in listed["Contents"]) == sorted([*output_keys, prefix + "manifest.json"])
    view = deployment.call("api", rest_event("GET", f"/v1/jobs/{job_id}", api_key_id=API_KEY_ID))
    assert json.loads(view["body"])["status"] == "succeeded"
    assert deployment.pump_completions() == []  # one manifest, completed once


def test_a_dropped_file_runs_and_its_outputs_appear_in_the_outbox(deployment: Deployment) -> None:
    stack = deployment.stack
    stack.drop("inbox/studio/e2e/outpaint.json", json.dumps(image_only()).encode())
    [created] = stack.drain(stack.inbox_events)
    dropped = deployment.call("drop_folder", created)
    assert dropped["outcome"] == "submitted", dropped
    job_id = dropped["job_id"]

    event = deployment.succeeded(job_id)

    assert event["detail"]["tenant"] == API_KEY_ID
    outputs = {o["filename"]: o for o in event["detail"]["outputs"]}
    copied = [deployment.call("drop_folder", e) for e in stack.drain(stack.job_events)]
    folder = "outbox/studio/e2e/outpaint/"
    assert [c["outbox"] for c in copied if c["outbox"]] == [folder]  # Queued and Started copy nothing
    assert stack.outbox_keys() == sorted(
        [folder + "job.json", folder + "result.json", *(folder + name for name in outputs)]
    )
    for name, ref in outputs.items():
        original = stack.s3.get_object(Bucket=stack.resources.bucket, Key=ref["key"])["Body"].read()
        assert stack.outbox(folder + name) == original
    result = json.loads(stack.outbox(folder + "result.json"))
    assert (result["job_id"], result["status"], result["source"]) == (
        job_id,
        "succeeded",
        "inbox/studio/e2e/outpaint.json",
    )
    assert stack.drain(stack.inbox_events) == []  # the outbox started nothing
