"""Argument checks shared by the job stores, so both reject the same calls with the same errors."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from comfyserve.contracts.jobs import ORDER_KEY_TIME, JobStatus, JobUpdate, check_transition

MAX_LIST_LIMIT = 1000


def transition_changes(
    from_statuses: Collection[JobStatus], to_status: JobStatus, fields: dict[str, Any]
) -> dict[str, JsonValue]:
    """Validate a transition request; returns the field changes in JSON form."""
    if not from_statuses:
        raise ValueError("from_statuses must not be empty")
    for from_status in from_statuses:
        check_transition(from_status, to_status)
    return JobUpdate(**fields).changes()


def field_changes(fields: dict[str, Any], when_status: Collection[JobStatus] | None = None) -> dict[str, JsonValue]:
    if not fields:
        raise ValueError("no fields to set")
    if when_status is not None and not when_status:
        raise ValueError("when_status must not be empty")
    return JobUpdate(**fields).changes()


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_LIST_LIMIT}")


def status_values(statuses: Collection[JobStatus]) -> list[str]:
    """The statuses a count filters on, in a stable order; at least one."""
    if not statuses:
        raise ValueError("statuses must not be empty")
    return sorted(status.value for status in statuses)


def order_key_before(time: datetime) -> str:
    """The ``list_order_key`` bound below which every job created before ``time`` sorts."""
    return time.astimezone(UTC).strftime(ORDER_KEY_TIME)
