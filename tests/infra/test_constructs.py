"""The constructs as a library in another stack (small synths): Spot workers, open egress, the worker image, and
cdk-nag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from infra.constructs.model_cache import ModelCache
from infra.constructs.network import Network
from infra.constructs.workers import WorkerCapacity, WorkerImage, Workers
from infra.gpu_platform import GpuPlatform
from infra.nag import acknowledge
from infra.stack import worker_image

ENV = cdk.Environment(account="123456789012", region="us-east-1")
CONTEXT = {
    "ssm:account=123456789012:parameterName=/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/"
    "image_id:region=us-east-1": "ami-0123456789abcdef0",
    "availability-zones:account=123456789012:region=us-east-1": ["us-east-1a", "us-east-1b"],
    "@aws-cdk/aws-autoscaling:generateLaunchTemplateInsteadOfLaunchConfig": True,
}


@pytest.fixture(scope="module")
def spot_app() -> cdk.Stack:
    app = cdk.App(context=CONTEXT)
    stack = cdk.Stack(app, "Library", env=ENV)
    network = Network(stack, "Network", open_egress=True, max_azs=2)
    logs_bucket = s3.Bucket(stack, "Logs")
    models = ModelCache(stack, "Models", vpc=network.vpc, subnets=network.worker_subnets, access_logs=logs_bucket)
    Workers(
        stack,
        "Workers",
        vpc=network.vpc,
        subnets=network.worker_subnets,
        capacity=WorkerCapacity(
            families=("g6e",), instance_size="2xlarge", spot=True, warm_pool_size=0, max_instances=3, root_volume_gib=80
        ),
        image=WorkerImage(ecs.ContainerImage.from_registry("public.ecr.aws/example/worker:1")),
        platform=GpuPlatform.of_image(),
        environment={"COMFYSERVE_BUCKET": "b"},
        model_cache=models,
        local_cache_bytes=1,
        log_retention=logs.RetentionDays.ONE_WEEK,
    )
    return stack


@pytest.fixture(scope="module")
def spot_stack(spot_app: cdk.Stack) -> Any:
    return Template.from_stack(spot_app)


def test_spot_groups_use_price_capacity_optimized_with_capacity_rebalance_and_no_warm_pool(spot_stack: Any) -> None:
    groups = [g["Properties"] for g in spot_stack.find_resources("AWS::AutoScaling::AutoScalingGroup").values()]
    assert groups
    for group in groups:
        assert (group["CapacityRebalance"], group["MinSize"]) == (True, "0")
        assert group["MixedInstancesPolicy"]["InstancesDistribution"] == {
            "OnDemandBaseCapacity": 0,
            "OnDemandPercentageAboveBaseCapacity": 0,
            "SpotAllocationStrategy": "price-capacity-optimized",
        }
    assert spot_stack.find_resources("AWS::AutoScaling::WarmPool") == {}
    templates = spot_stack.find_resources("AWS::EC2::LaunchTemplate")
    assert "g6e.2xlarge" in [t["Properties"]["LaunchTemplateData"].get("InstanceType") for t in templates.values()]


def test_open_egress_puts_workers_behind_one_nat_gateway(spot_stack: Any) -> None:
    assert len(spot_stack.find_resources("AWS::EC2::NatGateway")) == 1
    assert len(spot_stack.find_resources("AWS::EC2::InternetGateway")) == 1
    routes = [r["Properties"] for r in spot_stack.find_resources("AWS::EC2::Route").values()]
    assert any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and "NatGatewayId" in r for r in routes)


def test_an_existing_vpc_gets_the_endpoints_and_its_isolated_subnets_host_the_workers() -> None:
    app = cdk.App(context=CONTEXT)
    stack = cdk.Stack(app, "Existing", env=ENV)
    vpc = ec2.Vpc.from_vpc_attributes(
        stack,
        "Theirs",
        vpc_id="vpc-0abc1234def567890",
        availability_zones=["us-east-1a", "us-east-1b"],
        isolated_subnet_ids=["subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"],
        isolated_subnet_route_table_ids=["rtb-0aaa1111bbbb2222c", "rtb-0ddd3333eeee4444f"],
        vpc_cidr_block="10.9.0.0/16",
    )
    network = Network(stack, "Network", vpc=vpc)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::FlowLog", 0)  # their VPC, their flow logs
    template.resource_count_is("AWS::EC2::VPCEndpoint", 13)
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcId": "vpc-0abc1234def567890", "SubnetIds": ["subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"]},
    )
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {"VpcEndpointType": "Gateway", "RouteTableIds": ["rtb-0aaa1111bbbb2222c", "rtb-0ddd3333eeee4444f"]},
    )
    assert network.worker_subnet_ids == ["subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f"]


def test_spot_workers_pass_cdk_nag_in_a_stack_of_your_own(spot_stack: Any, spot_app: cdk.Stack) -> None:
    report = AwsSolutionsChecks().validate_scope(spot_app.node.find_child("Workers"))
    assert [violation.rule_name for violation in report.violations] == []


def _nag_app(acknowledged: bool, outdir: str) -> cdk.App:
    app = cdk.App(outdir=outdir)
    stack = cdk.Stack(app, "Nag")
    queue = sqs.Queue(stack, "Plain", encryption=sqs.QueueEncryption.SQS_MANAGED)  # no DLQ, no TLS-only policy
    if acknowledged:
        acknowledge(queue, "test: a queue kept plain on purpose", "AwsSolutions-SQS3", "AwsSolutions-SQS4")
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def test_cdk_nag_fails_a_synth_and_an_acknowledgement_with_a_reason_lets_it_pass(tmp_path: Any) -> None:
    with pytest.raises(RuntimeError, match="AwsSolutions-SQS4"):
        _nag_app(acknowledged=False, outdir=str(tmp_path / "plain")).synth()
    _nag_app(acknowledged=True, outdir=str(tmp_path / "acknowledged")).synth()


ECR_URI = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/worker:comfyui"


def test_the_worker_image_builds_the_comfyui_target_and_pulls_an_ecr_uri_through_its_repository(
    tmp_path: Path,
) -> None:
    """One synth: the comfyui backend's built image, an image in an ECR repository, one from another registry."""
    app = cdk.App(context=CONTEXT, outdir=str(tmp_path))
    stack = cdk.Stack(app, "Images", env=ENV)
    images = {
        "Built": worker_image(stack, backend="comfyui", uri=None),
        "Ecr": worker_image(stack, backend="comfyui", uri=ECR_URI),
        "Public": worker_image(stack, backend="builtin", uri="public.ecr.aws/example/worker:1"),
    }
    for name, image in images.items():
        ecs.Ec2TaskDefinition(stack, name).add_container("worker", image=image.image, memory_limit_mib=512)
    template = Template.from_stack(stack)
    app.synth()

    manifest = json.loads((tmp_path / "Images.assets.json").read_text(encoding="utf-8"))
    (built,) = manifest["dockerImages"].values()
    assert built["source"]["dockerFile"] == "gpu_container/Dockerfile"
    assert built["source"]["dockerBuildTarget"] == "comfyui"
    assert built["source"]["platform"] == "linux/amd64"

    task_images = {
        task["Properties"]["Family"]: task["Properties"]["ContainerDefinitions"][0]["Image"]
        for task in template.find_resources("AWS::ECS::TaskDefinition").values()
    }
    assert "public.ecr.aws/example/worker:1" in task_images.values()
    ecr_image = json.dumps([image for image in task_images.values() if "team/worker" in json.dumps(image)])
    assert "123456789012.dkr.ecr.us-west-2." in ecr_image and "/team/worker:comfyui" in ecr_image
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": [
                                    "ecr:BatchCheckLayerAvailability",
                                    "ecr:GetDownloadUrlForLayer",
                                    "ecr:BatchGetImage",
                                ],
                                "Resource": {
                                    "Fn::Join": [
                                        "",
                                        [
                                            "arn:",
                                            {"Ref": "AWS::Partition"},
                                            ":ecr:us-west-2:123456789012:repository/team/worker",
                                        ],
                                    ]
                                },
                            }
                        )
                    ]
                )
            }
        },
    )
