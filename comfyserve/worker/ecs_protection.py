"""ECS task scale-in protection through the ECS agent (``PUT $ECS_AGENT_URI/task-protection/v1/state``).

While a job runs the worker holds protection, so a scale-in or a deployment does not stop the task under it;
idle, it drops protection. Only a change of state costs a request (a worker that runs jobs back to back asks
once, renewing when less than half of the expiry is left). A failed request is logged and forgotten: the job
runs on, and the next change asks again.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request

from comfyserve.worker.protection import NoProtection, ScaleInProtection

log = logging.getLogger(__name__)
MAX_EXPIRY_MINUTES = 2880  # the agent's limit (48 h)


class EcsTaskProtection:
    def __init__(self, agent_uri: str, *, timeout_s: float = 2.0) -> None:
        self._url = agent_uri.rstrip("/") + "/task-protection/v1/state"
        self._timeout_s = timeout_s
        self._held_until: float | None = None  # monotonic time the held protection expires; None: not held

    def protect(self, expires_in_s: float) -> None:
        now = time.monotonic()
        if self._held_until is not None and self._held_until - now > expires_in_s / 2:
            return
        minutes = min(max(math.ceil(expires_in_s / 60), 1), MAX_EXPIRY_MINUTES)
        if self._put({"ProtectionEnabled": True, "ExpiresInMinutes": minutes}):
            self._held_until = now + minutes * 60

    def release(self) -> None:
        if self._held_until is None:
            return
        self._held_until = None
        self._put({"ProtectionEnabled": False})

    def _put(self, body: dict[str, object]) -> bool:
        request = urllib.request.Request(
            self._url, data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                answer = json.loads(response.read() or b"{}")
        except (OSError, ValueError) as exc:
            log.warning("task protection %s failed: %s", body, exc)
            return False
        failure = answer.get("failure") if isinstance(answer, dict) else None
        if failure:
            log.warning("task protection %s refused: %s", body, failure)
            return False
        return True


def task_protection(agent_uri: str | None) -> ScaleInProtection:
    """ECS protection when the agent is there (``ECS_AGENT_URI`` is set), else :class:`NoProtection`."""
    return EcsTaskProtection(agent_uri) if agent_uri else NoProtection()
