"""GPU workers: one capacity provider per family from zero, warm pool, launch template, task and service."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Match

from infra.constructs.workers import LOCAL_CACHE_DIR
from tests.infra.conftest import ROOT, Synth, only

FAMILIES = ("g5", "g6", "g6e")
PLACEHOLDER_AMI = "ami-0123456789abcdef0"  # cdk.json's cached look-up of the ECS GPU AMI (placeholder account)


def _user_data(launch_template: dict[str, Any]) -> str:
    """The user data script with CDK's tokens (the cluster name) left as JSON."""
    return json.dumps(launch_template["Properties"]["LaunchTemplateData"]["UserData"])


def test_one_launch_template_per_family_with_imdsv2_hop_limit_one_and_the_cached_gpu_ami(synth: Synth) -> None:
    templates = synth.resources("AWS::EC2::LaunchTemplate").values()
    types = sorted(t["Properties"]["LaunchTemplateData"]["InstanceType"] for t in templates)
    assert types == sorted(f"{family}.xlarge" for family in FAMILIES)
    for launch_template in templates:
        data = launch_template["Properties"]["LaunchTemplateData"]
        assert data["MetadataOptions"] == {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
        assert data["ImageId"] == PLACEHOLDER_AMI
        assert data["BlockDeviceMappings"][0]["Ebs"] == {"Encrypted": True, "VolumeSize": 100, "VolumeType": "gp3"}
        user_data = _user_data(launch_template)
        for line in ("ECS_WARM_POOLS_CHECK=true", "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached", "ECS_CLUSTER="):
            assert line in user_data
        assert "comfyserve-nvme.service" in user_data and "Amazon_EC2_NVMe_Instance_Storage" in user_data


def test_groups_start_at_zero_with_no_desired_capacity_and_a_stopped_warm_pool(synth: Synth) -> None:
    groups = synth.resources("AWS::AutoScaling::AutoScalingGroup")
    assert len(groups) == len(FAMILIES)
    for group in groups.values():
        properties = group["Properties"]
        assert properties["MinSize"] == "0" and properties["MaxSize"] == "6"
        assert "DesiredCapacity" not in properties
        assert properties["NewInstancesProtectedFromScaleIn"] is True
        assert "MixedInstancesPolicy" not in properties  # on-demand by default
    pools = synth.resources("AWS::AutoScaling::WarmPool")
    assert sorted(pool["Properties"]["AutoScalingGroupName"]["Ref"] for pool in pools.values()) == sorted(groups)
    for pool in pools.values():
        assert pool["Properties"] | {"AutoScalingGroupName": None} == {
            "AutoScalingGroupName": None,
            "MinSize": 1,
            "MaxGroupPreparedCapacity": 1,
            "PoolState": "Stopped",
        }


def test_each_family_has_a_managed_capacity_provider_in_the_service_strategy(synth: Synth) -> None:
    providers = synth.resources("AWS::ECS::CapacityProvider")
    groups = synth.resources("AWS::AutoScaling::AutoScalingGroup")
    assert len(providers) == len(FAMILIES)
    for provider in providers.values():
        asg = provider["Properties"]["AutoScalingGroupProvider"]
        assert asg["AutoScalingGroupArn"]["Ref"] in groups
        assert asg["ManagedScaling"]["Status"] == "ENABLED"
        assert asg["ManagedScaling"]["TargetCapacity"] == 100
        assert asg["ManagedTerminationProtection"] == "ENABLED"
        assert asg["ManagedDraining"] == "ENABLED"
    _, service = only(synth, "AWS::ECS::Service")
    strategy = service["CapacityProviderStrategy"]
    assert sorted(entry["CapacityProvider"]["Ref"] for entry in strategy) == sorted(providers)
    assert {entry["Weight"] for entry in strategy} == {1}
    association, associations = only(synth, "AWS::ECS::ClusterCapacityProviderAssociations")
    service_id, _ = only(synth, "AWS::ECS::Service")
    assert association in synth.template["Resources"][service_id]["DependsOn"]
    assert sorted(p["Ref"] for p in associations["CapacityProviders"]) == sorted(providers)


def test_a_deploy_leaves_the_running_count_alone_and_never_doubles_gpus(synth: Synth) -> None:
    _, service = only(synth, "AWS::ECS::Service")
    assert "DesiredCount" not in service  # a template value would reset the scaler's count on every deploy
    assert "LaunchType" not in service
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 100
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}


def test_worker_task_has_a_gpu_efs_through_the_access_point_nvme_and_a_120_s_stop_timeout(
    synth: Synth, template: Any
) -> None:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    (container,) = task["ContainerDefinitions"]
    assert container["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    assert container["StopTimeout"] == 120
    access_point, _ = only(synth, "AWS::EFS::AccessPoint")
    file_system, _ = only(synth, "AWS::EFS::FileSystem")
    volumes = {volume["Name"]: volume for volume in task["Volumes"]}
    assert volumes["models"]["EFSVolumeConfiguration"] == {
        "FilesystemId": {"Ref": file_system},
        "TransitEncryption": "ENABLED",
        "AuthorizationConfig": {"AccessPointId": {"Ref": access_point}, "IAM": "ENABLED"},
    }
    assert volumes["local-cache"]["Host"] == {"SourcePath": "/var/cache/comfyserve"}
    mounts = {mount["SourceVolume"]: mount["ContainerPath"] for mount in container["MountPoints"]}
    assert mounts == {"models": "/mnt/models", "local-cache": "/var/cache/comfyserve"}
    assert LOCAL_CACHE_DIR.startswith(mounts["local-cache"] + "/")
    template.has_resource_properties(
        "AWS::EFS::FileSystem", {"Encrypted": True, "ThroughputMode": "elastic", "PerformanceMode": "generalPurpose"}
    )
    template.has_resource_properties(
        "AWS::EFS::AccessPoint",
        {
            "PosixUser": {"Uid": "10001", "Gid": "10001"},
            "RootDirectory": Match.object_like({"Path": "/comfyserve/models"}),
        },
    )


def test_worker_container_has_its_own_health_check_as_ecs_ignores_the_images(synth: Synth) -> None:
    _, service = only(synth, "AWS::ECS::Service")
    task = synth.template["Resources"][service["TaskDefinition"]["Ref"]]["Properties"]
    (container,) = task["ContainerDefinitions"]
    command = ["CMD", "comfyserve", "worker", "--health"]
    assert container["HealthCheck"] == {
        "Command": command,
        "Interval": 30,
        "Timeout": 5,
        "StartPeriod": 300,  # ECS's maximum: the model preload's grace
        "Retries": 3,
    }
    dockerfile = (ROOT / "gpu_container" / "Dockerfile").read_text(encoding="utf-8")
    assert f"CMD {json.dumps(command[1:])}" in dockerfile  # the command the image declares


def test_cluster_has_container_insights(template: Any) -> None:
    clusters = template.find_resources("AWS::ECS::Cluster")
    assert [c["Properties"].get("ClusterSettings") for c in clusters.values()] == [
        [{"Name": "containerInsights", "Value": "enabled"}]
    ]


def test_models_sync_is_a_fargate_task_that_writes_efs(synth: Synth) -> None:
    tasks = synth.resources("AWS::ECS::TaskDefinition")
    (sync,) = [t["Properties"] for t in tasks.values() if t["Properties"].get("RequiresCompatibilities") == ["FARGATE"]]
    (container,) = sync["ContainerDefinitions"]
    assert container["EntryPoint"] == ["comfyserve"]
    assert container["Command"] == ["models", "sync", "--warm"]
    assert {"ContainerPath": "/mnt/models", "ReadOnly": False, "SourceVolume": "models"} in container["MountPoints"]


def test_the_default_backend_builds_the_images_default_target(synth: Synth) -> None:
    manifest = json.loads((synth.outdir / "comfyserve.assets.json").read_text(encoding="utf-8"))
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == "gpu_container/Dockerfile"
    assert "dockerBuildTarget" not in image["source"]  # builtin: the Dockerfile's last stage
