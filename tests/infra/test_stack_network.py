"""Workers' subnets have no way out but VPC endpoints: no internet or NAT gateway, endpoints only for them."""

from __future__ import annotations

import json

from infra.constructs.network import INTERFACE_ENDPOINTS
from tests.infra.conftest import Synth, only

INTERFACE_SERVICES = (
    *("sqs", "events", "ecr.api", "ecr.dkr", "logs", "ecs", "ecs-agent", "ecs-telemetry", "sts"),
    *("autoscaling", "monitoring"),  # the host's lifecycle action, its GPU metrics
)


def test_no_route_to_the_internet(synth: Synth) -> None:
    for kind in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
        assert synth.resources(kind) == {}
    routes = synth.resources("AWS::EC2::Route").values()
    assert not any("0.0.0.0/0" in json.dumps(route) for route in routes)
    for subnet in synth.resources("AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_gateway_and_interface_endpoints(synth: Synth) -> None:
    endpoints = [e["Properties"] for e in synth.resources("AWS::EC2::VPCEndpoint").values()]
    names = json.dumps([e["ServiceName"] for e in endpoints])
    gateways = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
    interfaces = [e for e in endpoints if e.get("VpcEndpointType") == "Interface"]
    assert len(gateways) == 2 and ".s3" in json.dumps(gateways) and ".dynamodb" in json.dumps(gateways)
    assert len(interfaces) == len(INTERFACE_ENDPOINTS) == len(INTERFACE_SERVICES)
    for service in INTERFACE_SERVICES:
        assert f".{service}" in names
    assert ".ssm" not in names and ".ssmmessages" not in names  # Session Manager is opt-in (ssm_access)
    assert all(e["PrivateDnsEnabled"] is True for e in interfaces)


def test_endpoints_answer_only_the_workers_and_the_sync_task_on_443(synth: Synth) -> None:
    endpoints = [e["Properties"] for e in synth.resources("AWS::EC2::VPCEndpoint").values()]
    (groups,) = {json.dumps(e["SecurityGroupIds"]) for e in endpoints if e.get("VpcEndpointType") == "Interface"}
    (endpoint_group,) = [ref["Fn::GetAtt"][0] for ref in json.loads(groups)]
    assert synth.template["Resources"][endpoint_group]["Properties"].get("SecurityGroupIngress") is None
    rules = [
        r["Properties"]
        for r in synth.resources("AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [endpoint_group, "GroupId"]}
    ]
    assert {(r["FromPort"], r["ToPort"]) for r in rules} == {(443, 443)}
    sources = {r["SourceSecurityGroupId"]["Fn::GetAtt"][0] for r in rules}
    descriptions = {synth.template["Resources"][s]["Properties"]["GroupDescription"] for s in sources}
    assert descriptions == {"GPU worker instances", "models sync task"}


def test_vpc_has_flow_logs_and_a_closed_default_security_group(synth: Synth) -> None:
    _, flow_log = only(synth, "AWS::EC2::FlowLog")
    assert flow_log["TrafficType"] == "ALL"
    assert len(synth.resources("Custom::VpcRestrictDefaultSG")) == 1


def test_workers_and_efs_are_in_the_isolated_subnets(synth: Synth) -> None:
    subnets = set(synth.resources("AWS::EC2::Subnet"))
    for group in synth.resources("AWS::AutoScaling::AutoScalingGroup").values():
        assert {ref["Ref"] for ref in group["Properties"]["VPCZoneIdentifier"]} == subnets
    targets = synth.resources("AWS::EFS::MountTarget").values()
    assert {t["Properties"]["SubnetId"]["Ref"] for t in targets} == subnets
