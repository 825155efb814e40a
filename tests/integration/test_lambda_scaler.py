"""The ``scaler`` Lambda on moto: the scheduled event, SQS attributes and an ECS service."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

from comfyserve.adapters.aws.clients import aws_client
from comfyserve.adapters.aws.provision import create_bucket, create_queue
from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.contracts.jobs import JobRecord
from comfyserve.service.autoscale import STATE_KEY
from tests.integration.conftest import AwsAdapters, AwsClients
from tests.integration.lambda_events import context, fresh_import, scheduled_event, sqs_event


class Scaler:
    def __init__(
        self,
        clients: AwsClients,
        monkeypatch: pytest.MonkeyPatch,
        moto_endpoint: str,
        with_asg: bool = False,
        backend: str = "builtin",
        still_running: int = 0,
    ) -> None:
        prefix = f"sc{uuid.uuid4().hex[:10]}"
        self.sqs = clients.client("sqs")
        self.s3 = clients.client("s3")
        self.ecs = clients.client("ecs")
        self.bucket = f"{prefix}-blobs"
        create_bucket(self.s3, self.bucket)
        self.queue_url = create_queue(self.sqs, f"{prefix}-jobs").queue_url
        self.ecs.create_cluster(clusterName=prefix)
        self.ecs.register_task_definition(
            family=prefix, containerDefinitions=[{"name": "worker", "image": "comfyserve", "memory": 512}]
        )
        # moto reports MOTO_ECS_SERVICE_RUNNING tasks running in a service created with it: tasks that a lower
        # desired count has not stopped yet (a task with a job in hand holds scale-in protection).
        monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", str(still_running))
        self.ecs.create_service(cluster=prefix, serviceName="workers", taskDefinition=prefix, desiredCount=0)
        monkeypatch.delenv("MOTO_ECS_SERVICE_RUNNING")
        self.cluster = prefix
        env = {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "COMFYSERVE_QUEUE_URL": self.queue_url,
            "COMFYSERVE_BUCKET": self.bucket,
            "COMFYSERVE_TABLE": f"{prefix}-jobs",
            "COMFYSERVE_EVENT_BUS": f"{prefix}-events",
            "COMFYSERVE_ECS_CLUSTER": prefix,
            "COMFYSERVE_ECS_SERVICE": "workers",
            "COMFYSERVE_SCALE_IN_COOLDOWN_S": "300",
            "COMFYSERVE_MAX_WORKERS": "4",
            "COMFYSERVE_BACKEND": backend,
            "COMFYSERVE_CATALOG_KEY": "catalog/fleet.json",
        }
        self.asg = clients.client("autoscaling")
        monkeypatch.delenv("COMFYSERVE_ASG_NAME", raising=False)
        if with_asg:
            ec2 = clients.client("ec2")
            image = ec2.describe_images()["Images"][0]["ImageId"]
            ec2.create_launch_template(
                LaunchTemplateName=f"{prefix}-gpu", LaunchTemplateData={"ImageId": image, "InstanceType": "g6.xlarge"}
            )
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=f"{prefix}-gpu",
                LaunchTemplate={"LaunchTemplateName": f"{prefix}-gpu"},
                MinSize=0,
                MaxSize=3,
                AvailabilityZones=["us-east-1a"],
            )
            env["COMFYSERVE_ASG_NAME"] = f"{prefix}-gpu"
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.module: ModuleType = fresh_import("lambdas.scaler")
        self.ecs_calls: Counter[str] = Counter()
        self.asg_calls: Counter[str] = Counter()
        aws_client("ecs").meta.events.register("before-call.ecs.*", self._count)
        aws_client("autoscaling").meta.events.register("before-call.auto-scaling.*", self._count_asg)

    def _count(self, model: Any, **_: Any) -> None:
        self.ecs_calls[model.name] += 1

    def _count_asg(self, model: Any, **_: Any) -> None:
        self.asg_calls[model.name] += 1

    def run(self) -> dict[str, Any]:
        result: dict[str, Any] = self.module.handler(scheduled_event(), context("scaler"))
        return result

    def instances(self) -> int:
        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[f"{self.cluster}-gpu"])
        return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])

    def desired(self) -> int:
        [service] = self.ecs.describe_services(cluster=self.cluster, services=["workers"])["services"]
        return int(service["desiredCount"])

    def close(self) -> None:
        aws_client("ecs").meta.events.unregister("before-call.ecs.*", self._count)
        aws_client("autoscaling").meta.events.unregister("before-call.auto-scaling.*", self._count_asg)


@pytest.fixture
def scaler(aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> Iterator[Scaler]:
    stack = Scaler(aws_clients, monkeypatch, moto_endpoint)
    yield stack
    stack.close()


def test_one_message_starts_a_worker_and_an_unchanged_count_is_not_written(scaler: Scaler) -> None:
    scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")

    first = scaler.run()
    second = scaler.run()

    assert first == {
        "trigger": "Scheduled Event",
        "previous": 0,
        "desired": 1,
        "updated": True,
        "instances": None,
        "reason": "backlog 1 at 4 jobs per task needs 1 tasks",
    }
    assert (second["previous"], second["desired"], second["updated"]) == (1, 1, False)
    assert scaler.desired() == 1
    assert scaler.ecs_calls == {"DescribeServices": 2, "UpdateService": 1}


def test_in_flight_work_counts_and_the_maximum_holds(scaler: Scaler) -> None:
    for _ in range(30):
        scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")
    scaler.sqs.receive_message(QueueUrl=scaler.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300)

    result = scaler.run()

    assert result["reason"] == "backlog 30 needs 8 tasks, capped at max_workers 4"
    assert scaler.desired() == 4


def test_an_empty_queue_goes_to_zero_only_after_the_cool_down(scaler: Scaler) -> None:
    scaler.ecs.update_service(cluster=scaler.cluster, service="workers", desiredCount=3)

    holding = scaler.run()
    state = json.loads(scaler.s3.get_object(Bucket=scaler.bucket, Key=STATE_KEY)["Body"].read())
    since = datetime.fromisoformat(state["surplus_since"])
    assert abs((datetime.now(UTC) - since).total_seconds()) < 30
    assert (holding["desired"], holding["updated"]) == (3, False) and scaler.desired() == 3

    def backdate(seconds: float) -> None:
        earlier = {"surplus_since": (since - timedelta(seconds=seconds)).isoformat()}
        scaler.s3.put_object(Bucket=scaler.bucket, Key=STATE_KEY, Body=json.dumps(earlier).encode())

    backdate(61)
    cooling = scaler.run()
    assert cooling["desired"] == 1 and scaler.desired() == 1

    backdate(301)
    stopped = scaler.run()
    assert stopped["desired"] == 0 and stopped["reason"].startswith("queue empty for 30")
    assert scaler.desired() == 0

    scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")
    restarted = scaler.run()
    assert restarted["desired"] == 1 and scaler.desired() == 1
    state = json.loads(scaler.s3.get_object(Bucket=scaler.bucket, Key=STATE_KEY)["Body"].read())
    assert state == {"surplus_since": None}


def test_the_gpu_group_is_sized_with_the_service_within_its_maximum(
    aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    scaler = Scaler(aws_clients, monkeypatch, moto_endpoint, with_asg=True)
    try:
        scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")
        started = scaler.run()
        assert (started["desired"], started["instances"], scaler.instances()) == (1, 1, 1)

        for _ in range(30):
            scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")
        grown = scaler.run()
        assert (grown["desired"], grown["instances"], scaler.instances()) == (4, 3, 3)  # the group's MaxSize is 3

        scaler.sqs.purge_queue(QueueUrl=scaler.queue_url)
        earlier = (datetime.now(UTC) - timedelta(seconds=301)).isoformat()
        scaler.s3.put_object(Bucket=scaler.bucket, Key=STATE_KEY, Body=json.dumps({"surplus_since": earlier}).encode())
        stopping = scaler.run()  # the service goes to 0; its tasks were still running when the scaler looked
        assert (stopping["desired"], stopping["instances"], scaler.instances(), scaler.desired()) == (0, 3, 3, 0)
        assert scaler.asg_calls == {"DescribeAutoScalingGroups": 3, "SetDesiredCapacity": 2}

        stopped = scaler.run()  # the next run sees them stopped and releases their instances
        assert (stopped["desired"], stopped["instances"], scaler.instances()) == (0, 0, 0)
        unchanged = scaler.run()  # nothing queued, nothing running: the group is read, not written
        assert (unchanged["instances"], scaler.instances()) == (0, 0)
        assert scaler.asg_calls == {"DescribeAutoScalingGroups": 5, "SetDesiredCapacity": 3}
    finally:
        scaler.close()


def test_the_gpu_group_never_drops_below_the_tasks_still_running(
    aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    """Two tasks still run (protected, each with a job in hand) while the service's desired count is already 0:
    the scaler keeps their two instances in the group, and raises it at once when work is queued."""
    scaler = Scaler(aws_clients, monkeypatch, moto_endpoint, with_asg=True, still_running=2)
    try:
        scaler.asg.set_desired_capacity(AutoScalingGroupName=f"{scaler.cluster}-gpu", DesiredCapacity=3)
        idle = scaler.run()
        assert (idle["desired"], idle["instances"], scaler.instances(), scaler.desired()) == (0, 2, 2, 0)

        scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")
        queued = scaler.run()  # the service asks for 1 task, its 2 old ones still run: the group stays at 2
        assert (queued["desired"], queued["instances"], scaler.instances()) == (1, 2, 2)
    finally:
        scaler.close()


def test_a_job_queued_event_from_the_bus_nudges_it(scaler: Scaler, aws_adapters: AwsAdapters) -> None:
    """The nudge as the stack delivers it: ``Job Queued`` from the bus into the nudge queue, read as an SQS batch."""
    record = JobRecord(job_id="j1", tenant="acme", workflow_key="w")
    aws_adapters.bus.publish(JobEvent.from_record(JobEventType.JOB_QUEUED, record))
    [envelope] = aws_adapters.envelopes()
    nudges_url = scaler.sqs.create_queue(QueueName=f"{scaler.cluster}-nudges")["QueueUrl"]
    nudges_arn = scaler.sqs.get_queue_attributes(QueueUrl=nudges_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    scaler.sqs.send_message(QueueUrl=nudges_url, MessageBody=json.dumps(envelope))
    [nudge] = scaler.sqs.receive_message(QueueUrl=nudges_url, MessageSystemAttributeNames=["All"])["Messages"]
    scaler.sqs.send_message(QueueUrl=scaler.queue_url, MessageBody="{}")

    result = scaler.module.handler(sqs_event([{"message": nudge, "arn": nudges_arn}]), context("scaler"))

    assert (result["trigger"], result["desired"], scaler.desired()) == ("nudge", 1, 1)


def test_a_comfyui_fleet_keeps_one_worker_until_its_catalog_is_published(
    aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    scaler = Scaler(aws_clients, monkeypatch, moto_endpoint, backend="comfyui")
    heads: Counter[str] = Counter()

    def count_head(params: dict[str, Any], **_: Any) -> None:
        heads[params["Key"]] += 1

    aws_client("s3").meta.events.register("provide-client-params.s3.HeadObject", count_head)
    try:
        bootstrap = scaler.run()  # a fresh deployment: empty queue, no worker, nothing published
        assert (bootstrap["desired"], bootstrap["updated"], scaler.desired()) == (1, True, 1)
        assert bootstrap["reason"].startswith("no catalog published yet, keeping 1 task to publish it")
        assert heads == {"catalog/fleet.json": 1}

        earlier = (datetime.now(UTC) - timedelta(seconds=301)).isoformat()
        scaler.s3.put_object(Bucket=scaler.bucket, Key=STATE_KEY, Body=json.dumps({"surplus_since": earlier}).encode())
        held = scaler.run()  # past the cool-down, still unpublished: the worker stays
        assert (held["desired"], scaler.desired()) == (1, 1)
        assert held["reason"].startswith("no catalog published yet")

        scaler.s3.put_object(Bucket=scaler.bucket, Key="catalog/fleet.json", Body=b"{}")
        published = scaler.run()  # the worker published: the normal decision (cool-down over) stops it
        assert (published["desired"], scaler.desired()) == (0, 0)
        assert published["reason"].startswith("queue empty for 30")
        assert heads == {"catalog/fleet.json": 3}
    finally:
        aws_client("s3").meta.events.unregister("provide-client-params.s3.HeadObject", count_head)
        scaler.close()


def test_a_builtin_fleet_never_looks_for_a_catalog(scaler: Scaler) -> None:
    heads: Counter[str] = Counter()

    def count_head(params: dict[str, Any], **_: Any) -> None:
        heads[params["Key"]] += 1

    aws_client("s3").meta.events.register("provide-client-params.s3.HeadObject", count_head)
    try:
        result = scaler.run()
    finally:
        aws_client("s3").meta.events.unregister("provide-client-params.s3.HeadObject", count_head)
    assert (result["desired"], scaler.desired(), heads) == (0, 0, {})
