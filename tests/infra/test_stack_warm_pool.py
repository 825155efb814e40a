"""Warm-pool instances that are really warm: the launch lifecycle hook, what the host runs and may do, the
instance refresh, the hot set, the scaler's direct capacity path and Session Manager."""

from __future__ import annotations

import json
from typing import Any

from infra.constructs.workers import GPU_METRICS_NAMESPACE, HOT_DIR, LIFECYCLE_HOOK, PREPARE_SCRIPT
from tests.infra.conftest import Synth, function_id, function_role, grants, only, role_statements


def _groups(synth: Synth) -> dict[str, dict[str, Any]]:
    return synth.resources("AWS::AutoScaling::AutoScalingGroup")


def _instance_role(synth: Synth, group: str) -> str:
    """The role of the group's instances (launch template -> instance profile -> role)."""
    template_ref = _groups(synth)[group]["Properties"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"]
    data = synth.template["Resources"][template_ref]["Properties"]["LaunchTemplateData"]
    profile = data["IamInstanceProfile"]["Arn"]["Fn::GetAtt"][0]
    return str(synth.template["Resources"][profile]["Properties"]["Roles"][0]["Ref"])


def _user_data(synth: Synth, group: str) -> str:
    template_ref = _groups(synth)[group]["Properties"]["LaunchTemplate"]["LaunchTemplateId"]["Ref"]
    data = synth.template["Resources"][template_ref]["Properties"]["LaunchTemplateData"]
    parts = data["UserData"]["Fn::Base64"]
    pieces = parts["Fn::Join"][1] if isinstance(parts, dict) else [parts]
    return "".join(piece if isinstance(piece, str) else json.dumps(piece) for piece in pieces)


def test_each_group_has_a_launch_hook_that_abandons_an_instance_that_never_answers(synth: Synth) -> None:
    hooks = synth.resources("AWS::AutoScaling::LifecycleHook")
    assert sorted(h["Properties"]["AutoScalingGroupName"]["Ref"] for h in hooks.values()) == sorted(_groups(synth))
    for hook in hooks.values():
        assert hook["Properties"] | {"AutoScalingGroupName": None} == {
            "AutoScalingGroupName": None,
            "LifecycleHookName": LIFECYCLE_HOOK,
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_LAUNCHING",
            "DefaultResult": "ABANDON",
            "HeartbeatTimeout": 1800,
        }
    hook_of = {h["Properties"]["AutoScalingGroupName"]["Ref"]: name for name, h in hooks.items()}
    for pool in synth.resources("AWS::AutoScaling::WarmPool").values():
        group = pool["Properties"]["AutoScalingGroupName"]["Ref"]
        # The pool's first instance launches at once: the hook and the instance's grant exist before it.
        assert hook_of[group] in pool["DependsOn"]
        assert any("CompleteLifecycleAction" in name for name in pool["DependsOn"])


def test_an_instance_completes_only_its_own_groups_hook_and_pulls_only_the_worker_repository(synth: Synth) -> None:
    for group in _groups(synth):
        role = _instance_role(synth, group)
        (completes,) = grants(synth, role, "autoscaling:CompleteLifecycleAction")
        text = json.dumps(completes)
        assert f'{{"Ref": "{group}"}}' in text and ":autoScalingGroup:*:autoScalingGroupName/" in text
        assert [json.dumps(g) for g in grants(synth, role, "autoscaling:SetDesiredCapacity")] == []
        pulls = grants(synth, role, "ecr:BatchGetImage")
        assert len(pulls) == 1 and "container-assets" in json.dumps(pulls)  # the bootstrap repository only
        metrics = [s for s in role_statements(synth, role) if s["Action"] == "cloudwatch:PutMetricData"]
        assert [s["Condition"] for s in metrics] == [{"StringEquals": {"cloudwatch:namespace": GPU_METRICS_NAMESPACE}}]


def test_the_host_pulls_the_task_definitions_image_and_runs_the_repositorys_script(synth: Synth) -> None:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    image = json.dumps(task["ContainerDefinitions"][0]["Image"])
    script = PREPARE_SCRIPT.read_text(encoding="utf-8").strip()
    for group in _groups(synth):
        user_data = _user_data(synth, group)
        assert script in user_data  # the tested script, byte for byte
        assert '"hook_name": "comfyserve-prepare"' in user_data
        assert image.strip('"{}') in user_data  # the same image reference as the task definition (its asset tag)
        # Every boot: the NVMe cache, then the lifecycle action, both before the ECS agent; the first boot runs
        # the script from cloud-init, which the ECS agent waits for.
        assert "Before=ecs.service" in user_data and "systemctl enable comfyserve-prepare.service" in user_data
        assert "ecs.service.d/comfyserve.conf <<'EOF'\n[Unit]\nAfter=cloud-final.service" in user_data
        assert "\n/usr/bin/python3 /usr/local/bin/comfyserve-prepare\n" in user_data
        assert "ECS_WARM_POOLS_CHECK=true" in user_data and "nvidia_gpu" in user_data


def test_user_data_stays_under_ec2s_16_kb(synth: Synth) -> None:
    for group in _groups(synth):
        assert len(_user_data(synth, group).encode()) < 16 * 1024  # EC2's limit before base64


def test_a_new_launch_template_version_refreshes_idle_and_pooled_instances(synth: Synth) -> None:
    for group in _groups(synth).values():
        refresh = group["UpdatePolicy"]["AutoScalingInstanceRefresh"]
        assert refresh["Strategy"] == "Rolling"
        assert refresh["Preferences"]["SkipMatching"] is True
        assert refresh["Preferences"]["ScaleInProtectedInstances"] == "Ignore"  # a running job is not cut short


def test_the_task_carries_the_images_cuda_and_the_driver_it_needs(synth: Synth) -> None:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    environment = {item["Name"]: item["Value"] for item in task["ContainerDefinitions"][0]["Environment"]}
    assert (environment["COMFYSERVE_CUDA_VERSION"], environment["COMFYSERVE_MIN_DRIVER"]) == ("13.0", "580")


def test_the_scaler_sizes_the_one_group_when_there_is_one_family(single_synth: Synth) -> None:
    (group,) = _groups(single_synth)
    scaler = single_synth.template["Resources"][function_id(single_synth, "scaler")]["Properties"]
    assert scaler["Environment"]["Variables"]["COMFYSERVE_ASG_NAME"] == {"Ref": group}
    role = function_role(single_synth, "scaler")
    (sized,) = grants(single_synth, role, "autoscaling:SetDesiredCapacity")
    assert f'{{"Ref": "{group}"}}' in json.dumps(sized) and ":autoScalingGroupName/" in json.dumps(sized)
    assert grants(single_synth, role, "autoscaling:DescribeAutoScalingGroups") == ["*"]  # no resource-level form
    assert grants(single_synth, role, "autoscaling:UpdateAutoScalingGroup") == []


def test_with_several_families_managed_scaling_alone_sizes_the_groups(synth: Synth) -> None:
    scaler = synth.template["Resources"][function_id(synth, "scaler")]["Properties"]
    assert "COMFYSERVE_ASG_NAME" not in scaler["Environment"]["Variables"]
    assert grants(synth, function_role(synth, "scaler"), "autoscaling:SetDesiredCapacity") == []


def test_hot_models_get_a_faster_root_volume_a_mount_and_read_access(single_synth: Synth, synth: Synth) -> None:
    (template,) = single_synth.resources("AWS::EC2::LaunchTemplate").values()
    ebs = template["Properties"]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]
    assert (ebs["Throughput"], ebs["Iops"]) == (500, 3000)
    (group,) = _groups(single_synth)
    config = _user_data(single_synth, group).split("/etc/comfyserve/prepare.json <<'EOF'\n", 1)[1].split("\nEOF")[0]
    assert '"hot_models": [' in config and '"checkpoints/sdxl.safetensors"' in config and "loras/detail" in config
    _, service = only(single_synth, "AWS::ECS::Service")
    task = single_synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    assert {"SourcePath": HOT_DIR} in [volume.get("Host") for volume in task["Volumes"]]
    assert grants(single_synth, _instance_role(single_synth, group), "s3:GetObject")
    # Without a hot set: gp3's baseline, no mount, no read of the models bucket.
    for launch_template in synth.resources("AWS::EC2::LaunchTemplate").values():
        assert "Throughput" not in launch_template["Properties"]["LaunchTemplateData"]["BlockDeviceMappings"][0]["Ebs"]
    assert all(grants(synth, _instance_role(synth, g), "s3:GetObject") == [] for g in _groups(synth))


def test_session_manager_is_opt_in_with_its_endpoints(single_synth: Synth, synth: Synth) -> None:
    (group,) = _groups(single_synth)
    role = single_synth.template["Resources"][_instance_role(single_synth, group)]["Properties"]
    assert "AmazonSSMManagedInstanceCore" in json.dumps(role["ManagedPolicyArns"])
    names = json.dumps(
        [e["Properties"]["ServiceName"] for e in single_synth.resources("AWS::EC2::VPCEndpoint").values()]
    )
    for service in (".ssm", ".ssmmessages", ".ec2messages"):
        assert f'{service}"' in names
    for g in _groups(synth):
        assert "ManagedPolicyArns" not in synth.template["Resources"][_instance_role(synth, g)]["Properties"]
