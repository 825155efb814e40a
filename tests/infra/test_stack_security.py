"""Who may do what: grants on named resources only, buckets private and TLS only, the secret read by one."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from tests.infra.conftest import Synth, function_id, function_role, grants, only, role_statements


def _ref_ids(resources: list[Any]) -> set[str]:
    """Logical ids a list of IAM resources points at (``Ref`` or ``Fn::GetAtt``, also inside ``Fn::Join``)."""
    text = json.dumps(resources)
    return {token.split('"')[0] for token in text.split('"Ref": "')[1:]} | {
        token.split('"')[0] for token in text.split('"Fn::GetAtt": ["')[1:]
    }


def _queue_ids(synth: Synth) -> tuple[str, str]:
    queues = synth.resources("AWS::SQS::Queue")
    (jobs,) = [name for name, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    return jobs, queues[jobs]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]


def _worker_task_role(synth: Synth) -> str:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    return str(task["TaskRoleArn"]["Fn::GetAtt"][0])


def test_buckets_block_public_access_encrypt_and_refuse_plain_http(synth: Synth, template: Any) -> None:
    buckets = synth.resources("AWS::S3::Bucket")
    assert len(buckets) == 4  # results, inbox, models, access logs
    for bucket in buckets.values():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    policies = synth.resources("AWS::S3::BucketPolicy").values()
    assert {p["Properties"]["Bucket"]["Ref"] for p in policies} == set(buckets)
    template.all_resources_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )


def test_the_scaler_may_change_only_the_worker_service_and_read_only_the_queue_depth(synth: Synth) -> None:
    role = function_role(synth, "scaler")
    service, _ = only(synth, "AWS::ECS::Service")
    assert grants(synth, role, "ecs:UpdateService") == [{"Ref": service}]
    jobs, _ = _queue_ids(synth)
    (nudges,) = [name for name in synth.resources("AWS::SQS::Queue") if name.startswith("ScalingNudges")]
    assert _ref_ids(grants(synth, role, "sqs:GetQueueAttributes")) == {jobs, nudges}
    assert grants(synth, role, "sqs:SendMessage") == []
    assert _ref_ids(grants(synth, role, "sqs:ReceiveMessage")) == {nudges}  # its own nudges, never a job
    assert grants(synth, role, "dynamodb:PutItem") == []
    writes = json.dumps(grants(synth, role, "s3:PutObject"))
    assert "/scaler/state.json" in writes and "/*" not in writes


def test_workers_consume_the_queue_and_the_api_only_sends(synth: Synth) -> None:
    jobs, dead = _queue_ids(synth)
    worker = _worker_task_role(synth)
    assert _ref_ids(grants(synth, worker, "sqs:ReceiveMessage")) == {jobs}
    assert _ref_ids(grants(synth, worker, "sqs:ChangeMessageVisibility")) == {jobs}
    assert _ref_ids(grants(synth, worker, "sqs:DeleteMessage")) == {jobs}
    api = function_role(synth, "api")
    assert _ref_ids(grants(synth, api, "sqs:SendMessage")) == {jobs}
    assert grants(synth, api, "sqs:ReceiveMessage") == []
    assert grants(synth, api, "ecs:UpdateService") == []
    dead_letter = function_role(synth, "dead_letter")
    assert _ref_ids(grants(synth, dead_letter, "sqs:ReceiveMessage")) == {dead}


def test_workers_may_protect_their_own_tasks_and_mount_efs_through_the_access_point(synth: Synth) -> None:
    worker = _worker_task_role(synth)
    (protected,) = grants(synth, worker, "ecs:UpdateTaskProtection")
    cluster, _ = only(synth, "AWS::ECS::Cluster")
    assert ":task/" in json.dumps(protected) and cluster in json.dumps(protected)
    access_point, _ = only(synth, "AWS::EFS::AccessPoint")
    mount = [s for s in role_statements(synth, worker) if "elasticfilesystem:ClientMount" in json.dumps(s["Action"])]
    assert mount and all(access_point in json.dumps(s["Condition"]) for s in mount)


def test_only_the_webhooks_function_reads_the_signing_secret(synth: Synth) -> None:
    secret, _ = only(synth, "AWS::SecretsManager::Secret")
    readers = {
        policy["Properties"]["Roles"][0]["Ref"]
        for policy in synth.resources("AWS::IAM::Policy").values()
        if any(
            "secretsmanager:GetSecretValue" in json.dumps(s["Action"]) and secret in json.dumps(s["Resource"])
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )
    }
    assert readers == {function_role(synth, "webhooks")}
    webhooks = synth.template["Resources"][function_id(synth, "webhooks")]["Properties"]
    assert webhooks["Environment"]["Variables"]["COMFYSERVE_WEBHOOK_SECRET_ARN"] == {"Ref": secret}


def test_no_statement_allows_every_action(synth: Synth) -> None:
    for policy in synth.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert "*" not in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])


def test_functions_run_on_arm64_python_with_tracing(synth: Synth) -> None:
    for handler in ("api", "completion", "dead_letter", "drop_folder", "scaler", "webhooks"):
        properties = synth.template["Resources"][function_id(synth, handler)]["Properties"]
        assert properties["Architectures"] == ["arm64"]
        assert properties["Runtime"] == "python3.13"
        assert properties["TracingConfig"] == {"Mode": "Active"}


def test_alarms_notify_an_encrypted_topic_with_the_e_mail_subscription(synth: Synth, template: Any) -> None:
    topic, properties = only(synth, "AWS::SNS::Topic")
    assert "KmsMasterKeyId" in properties
    _, subscription = only(synth, "AWS::SNS::Subscription")
    assert subscription == {"Endpoint": "gpu-oncall@example.com", "Protocol": "email", "TopicArn": {"Ref": topic}}
    alarms = synth.resources("AWS::CloudWatch::Alarm").values()
    assert len(alarms) == 8
    assert all(alarm["Properties"]["AlarmActions"] == [{"Ref": topic}] for alarm in alarms)
    names = json.dumps([alarm["Properties"] for alarm in alarms])
    for metric in ("ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible", "ModelLoadFailures", "p95"):
        assert metric in names
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
