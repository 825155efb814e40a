"""The worker ECS service's desired count: one DescribeServices to read it, one UpdateService to change it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient


class EcsServiceNotFound(LookupError):
    def __init__(self, cluster: str, service: str) -> None:
        super().__init__(f"ECS service {service!r} not found in cluster {cluster!r}")


class EcsWorkerService:
    def __init__(self, client: ECSClient, cluster: str, service: str) -> None:
        self._ecs = client
        self.cluster = cluster
        self.service = service

    def desired_count(self) -> int:
        response = self._ecs.describe_services(cluster=self.cluster, services=[self.service])
        services = [s for s in response.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise EcsServiceNotFound(self.cluster, self.service)
        return int(services[0]["desiredCount"])

    def set_desired_count(self, count: int) -> None:
        self._ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=count)
