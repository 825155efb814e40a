"""Scale-in protection: while a job runs, the platform must not stop this worker to shrink the fleet.

On ECS the worker asks its agent (``PUT $ECS_AGENT_URI/task-protection/v1/state``); elsewhere there is
nothing to ask and :class:`NoProtection` stands in.
"""

from __future__ import annotations

from typing import Protocol


class ScaleInProtection(Protocol):
    def protect(self, expires_in_s: float) -> None:
        """Hold protection for up to ``expires_in_s`` (renewing it if held). Never raises: a failure is logged."""
        ...

    def release(self) -> None:
        """Drop protection (the worker is idle). Never raises."""
        ...


class NoProtection:
    """Outside ECS: protection is a no-op."""

    def protect(self, expires_in_s: float) -> None:
        return None

    def release(self) -> None:
        return None
