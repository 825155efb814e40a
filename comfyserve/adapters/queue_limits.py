"""SQS's limits on receive and visibility arguments, enforced by both queue adapters alike."""

from __future__ import annotations

MAX_BATCH = 10
MAX_WAIT_S = 20
MAX_VISIBILITY_S = 43_200


def check_receive_args(max_messages: int, visibility_timeout_s: int, wait_s: int) -> None:
    if not 1 <= max_messages <= MAX_BATCH:
        raise ValueError(f"max_messages must be 1-{MAX_BATCH}")
    check_visibility(visibility_timeout_s)
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise ValueError(f"wait_s must be 0-{MAX_WAIT_S}")


def check_visibility(seconds: int) -> None:
    if not 0 <= seconds <= MAX_VISIBILITY_S:
        raise ValueError(f"visibility timeout must be 0-{MAX_VISIBILITY_S} s")
