"""EventBus on an EventBridge bus: one PutEvents per event, Source ``comfyserve.job``, DetailType the event's
readable name ("Job Succeeded", "Job Progress" …), Detail the JobEvent JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING

from comfyserve.contracts.events import JobEvent, JobEventType
from comfyserve.ports import EventPublishError

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "comfyserve.job"
DETAIL_TYPES: dict[JobEventType, str] = {
    JobEventType.JOB_QUEUED: "Job Queued",
    JobEventType.JOB_STARTED: "Job Started",
    JobEventType.JOB_PROGRESS: "Job Progress",
    JobEventType.JOB_SUCCEEDED: "Job Succeeded",
    JobEventType.JOB_FAILED: "Job Failed",
    JobEventType.JOB_CANCELLED: "Job Cancelled",
}


class EventBridgeBus:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._events = client
        self.bus_name = bus_name

    def publish(self, event: JobEvent) -> None:
        response = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": DETAIL_TYPES[event.type],
                    "Detail": event.model_dump_json(),
                    "EventBusName": self.bus_name,
                    "Time": event.time,
                }
            ]
        )
        if response.get("FailedEntryCount", 0):
            entry = response["Entries"][0]
            raise EventPublishError(
                f"EventBridge refused {event.type.value} for job {event.job_id}: "
                f"{entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
            )
