"""The worker's figures and log keys.

Figures go out as CloudWatch embedded metric format documents (Powertools Metrics, namespace ``comfyserve``,
service ``worker``), one document when a job is claimed and one when it ends, to a sink: stdout in the cloud
(the container's log stream, which CloudWatch turns into metrics), a JSON-lines file in the local stack's
data directory (``GET /v1/metrics`` sums it with :func:`summarize`). Metric names (all per job):

    QueueWait, ColdStart, Execution, NodeTime (one value per node), ModelLoad<Tier> (seconds)
    JobsInFlight (1 when claimed, 0 when it ends), Jobs<Outcome> (count: Succeeded, Failed, Cancelled,
    Released, Lost)

Log lines: while a job runs, every line of the worker (any ``logging`` logger under ``comfyserve``) carries
``job_id``, ``tenant`` and ``attempt`` through the Powertools Logger's appended keys.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from comfyserve.contracts.jobs import JobRecord, Timings

NAMESPACE = "comfyserve"
SERVICE = "worker"
TENANT_PROPERTY = "tenant"  # the job's tenant on each of its EMF documents
LOGGER_NAME = "comfyserve"  # the package's loggers propagate to it

EmfSink = Callable[[dict[str, Any]], None]


def stdout_sink(document: dict[str, Any]) -> None:
    """One EMF document per line on stdout (the cloud: CloudWatch Logs extracts the metrics)."""
    sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def worker_logger(level: int | str = "INFO", stream: Any = None) -> Logger:
    """The Powertools Logger every ``comfyserve.*`` log line of the worker goes through (JSON, one per line)."""
    import logging

    return Logger(service=LOGGER_NAME, level=level, logger_handler=logging.StreamHandler(stream or sys.stdout))


class WorkerTelemetry:
    def __init__(self, sink: EmfSink | None = None, logger: Logger | None = None) -> None:
        self._sink = sink
        self._logger = logger
        self._lock = threading.Lock()
        self._metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        self._tenant: str | None = None

    @contextmanager
    def job(self, record: JobRecord) -> Iterator[None]:
        """Log keys of ``record`` on every line while the block runs; its figures carry its tenant (an EMF
        property, not a dimension: no metric per tenant in CloudWatch)."""
        self._tenant = record.tenant
        try:
            if self._logger is None:
                yield
                return
            self._logger.append_keys(job_id=record.job_id, tenant=record.tenant, attempt=record.attempts)
            try:
                yield
            finally:
                self._logger.remove_keys(["job_id", "tenant", "attempt"])
        finally:
            self._tenant = None

    def claimed(self, queued_s: float | None) -> None:
        self._add("JobsInFlight", MetricUnit.Count, 1)
        if queued_s is not None:
            self._add("QueueWait", MetricUnit.Seconds, queued_s)
        self._flush()

    def model_load(self, tier: str, seconds: float) -> None:
        """A model load from ``tier`` (``s3``, ``efs``, ``nvme``, ``ram`` …), reported with the running job."""
        self._add(f"ModelLoad{tier.capitalize()}", MetricUnit.Seconds, seconds)

    def finished(self, outcome: str, timings: Timings | None, cold_start_s: float | None) -> None:
        self._add("JobsInFlight", MetricUnit.Count, 0)
        self._add(f"Jobs{outcome.capitalize()}", MetricUnit.Count, 1)
        if cold_start_s is not None:
            self._add("ColdStart", MetricUnit.Seconds, cold_start_s)
        if timings is not None and timings.execution_s is not None:
            self._add("Execution", MetricUnit.Seconds, timings.execution_s)
        for seconds in timings.per_node.values() if timings is not None else ():
            self._add("NodeTime", MetricUnit.Seconds, seconds)
        self._flush()

    def _add(self, name: str, unit: MetricUnit, value: float) -> None:
        if self._sink is not None:
            with self._lock:
                self._metrics.add_metric(name=name, unit=unit, value=value)

    def _flush(self) -> None:
        if self._sink is None:
            return
        with self._lock:
            if self._tenant is not None:
                self._metrics.add_metadata(key=TENANT_PROPERTY, value=self._tenant)
            document = dict(self._metrics.serialize_metric_set())
            self._metrics.clear_metrics()
        self._sink(document)


def summarize(documents: Iterable[dict[str, Any]], tenant: str | None = None) -> dict[str, Any]:
    """The figures of EMF documents (of ``tenant``'s jobs only, when given): per metric its unit, count, sum,
    min, max and mean; ``jobs_in_flight`` is the claims (``JobsInFlight`` of 1) less the ends (``Jobs<Outcome>``)."""
    figures: dict[str, dict[str, Any]] = {}
    for document in documents:
        if tenant is not None and document.get(TENANT_PROPERTY) != tenant:
            continue
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive.get("Metrics", []):
                name = metric["Name"]
                values = document.get(name, [])
                values = values if isinstance(values, list) else [values]
                entry = figures.setdefault(name, {"unit": metric.get("Unit"), "values": []})
                entry["values"].extend(float(v) for v in values)
    summary: dict[str, Any] = {}
    for name, entry in sorted(figures.items()):
        values = entry["values"]
        summary[name] = {
            "unit": entry["unit"],
            "count": len(values),
            "sum": round(sum(values), 6),
            "min": min(values, default=0.0),
            "max": max(values, default=0.0),
            "mean": round(sum(values) / len(values), 6) if values else 0.0,
        }
    in_flight = summary.pop("JobsInFlight", None)
    claims = in_flight["sum"] if in_flight else 0
    ends = sum(v["count"] for k, v in summary.items() if k.startswith("Jobs"))
    return {"metrics": summary, "jobs_in_flight": int(claims) - ends}
