"""The network: worker subnets whose only way out is VPC endpoints, unless egress is opened on purpose."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

GATEWAY_ENDPOINTS = {
    "S3": ec2.GatewayVpcEndpointAwsService.S3,
    "DynamoDb": ec2.GatewayVpcEndpointAwsService.DYNAMODB,
}
# What a worker, the ECS agent and the host talk to: the queue, the bus, the image registry, logs, ECS,
# credentials, its Auto Scaling lifecycle action and its GPU metrics.
INTERFACE_ENDPOINTS = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Events": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "Autoscaling": ec2.InterfaceVpcEndpointAwsService.AUTOSCALING,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
}
# Session Manager's agent on a GPU host (ssm_access).
SSM_ENDPOINTS = {
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
}


class Network(Construct):
    """A new VPC (or an existing one) with the endpoints; ``worker_subnets`` is where GPU instances run."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc | None = None,
        max_azs: int = 2,
        open_egress: bool = False,
        flow_log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        ssm_access: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        self.open_egress = open_egress
        subnet_type = ec2.SubnetType.PRIVATE_WITH_EGRESS if open_egress else ec2.SubnetType.PRIVATE_ISOLATED
        if vpc is None:
            subnets = [ec2.SubnetConfiguration(name="workers", subnet_type=subnet_type, cidr_mask=20)]
            if open_egress:
                subnets.append(ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24))
            vpc = ec2.Vpc(
                self,
                "Vpc",
                ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
                max_azs=max_azs,
                nat_gateways=1 if open_egress else 0,
                subnet_configuration=subnets,
                restrict_default_security_group=True,
            )
            flow_logs = logs.LogGroup(
                self, "FlowLogs", retention=flow_log_retention, removal_policy=RemovalPolicy.DESTROY
            )
            vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        self.vpc = vpc
        self.worker_subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        self.worker_subnet_ids = vpc.select_subnets(subnet_type=subnet_type).subnet_ids
        for name, service in GATEWAY_ENDPOINTS.items():
            vpc.add_gateway_endpoint(name, service=service, subnets=[self.worker_subnets])
        # Interface endpoints answer HTTPS from the security groups allowed in (allow_endpoints_from), no one else.
        self.endpoint_security_group = ec2.SecurityGroup(
            self, "EndpointSecurityGroup", vpc=vpc, description="VPC interface endpoints", allow_all_outbound=False
        )
        self.endpoints = {
            name: vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.worker_subnets,
                private_dns_enabled=True,
                open=False,
                security_groups=[self.endpoint_security_group],
            )
            for name, service in {**INTERFACE_ENDPOINTS, **(SSM_ENDPOINTS if ssm_access else {})}.items()
        }

    def allow_endpoints_from(self, peer: ec2.IConnectable) -> None:
        self.endpoint_security_group.connections.allow_from(peer, ec2.Port.tcp(443), "HTTPS to the VPC endpoints")
