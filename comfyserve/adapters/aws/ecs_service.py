"""The worker ECS service's task counts: one DescribeServices to read them, one UpdateService to change the
desired count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from comfyserve.service.autoscale import ServiceCounts

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

    def counts(self) -> ServiceCounts:
        response = self._ecs.describe_services(cluster=self.cluster, services=[self.service])
        services = [s for s in response.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise EcsServiceNotFound(self.cluster, self.service)
        found = services[0]
        return ServiceCounts(
            desired=int(found["desiredCount"]),
            running=max(0, int(found.get("runningCount", 0))) + max(0, int(found.get("pendingCount", 0))),
        )

    def set_desired_count(self, count: int) -> None:
        self._ecs.update_service(cluster=self.cluster, service=self.service, desiredCount=count)
