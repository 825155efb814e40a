"""The GPU Auto Scaling group sized by the scaler directly (one instance per worker task), so that a task from
zero does not wait for ECS managed scaling's CapacityProviderReservation datapoints and alarm. Managed scaling
stays on beside it: instances running tasks keep ECS's managed termination protection, so a lower desired
capacity can only remove an empty instance, once ECS lifts that instance's protection (docs/SCALING.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient


class AsgNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Auto Scaling group {name!r} not found")


class AsgCapacity:
    def __init__(self, client: AutoScalingClient, name: str) -> None:
        self._asg = client
        self.name = name

    def desired_instances(self) -> tuple[int, int]:
        """(desired capacity, maximum size)."""
        groups = self._asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.name])["AutoScalingGroups"]
        if not groups:
            raise AsgNotFound(self.name)
        return int(groups[0]["DesiredCapacity"]), int(groups[0]["MaxSize"])

    def set_instances(self, count: int) -> None:
        self._asg.set_desired_capacity(AutoScalingGroupName=self.name, DesiredCapacity=count, HonorCooldown=False)
