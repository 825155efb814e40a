"""JobStore on SQLite: the record as JSON plus the columns that are queried; every check-and-write in one
``BEGIN IMMEDIATE`` transaction, so concurrent processes see conditional writes as DynamoDB's."""

from __future__ import annotations

import builtins
import json
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from comfyserve.adapters.cursor import decode_cursor, encode_cursor
from comfyserve.adapters.job_writes import (
    check_limit,
    field_changes,
    order_key_before,
    status_values,
    transition_changes,
)
from comfyserve.adapters.local.sqlite_db import SqliteDb
from comfyserve.contracts.jobs import JobRecord, JobStatus, Progress, utc_now
from comfyserve.ports import IdempotencyKeyInUse, JobAlreadyExists, JobNotFound, TransitionConflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    order_key TEXT NOT NULL,
    idempotency_key TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, order_key);
CREATE INDEX IF NOT EXISTS jobs_by_tenant_status ON jobs (tenant, status, order_key);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_idempotency_key ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_undispatched ON jobs (order_key) WHERE json_extract(record, '$.dispatch_pending') = 1;
"""
# Matches the partial index's condition word for word, so SQLite reads the index (only undispatched jobs).
UNDISPATCHED_SQL = (
    "SELECT record FROM jobs WHERE json_extract(record, '$.dispatch_pending') = 1 AND order_key < ?"
    " ORDER BY order_key LIMIT ?"
)


class SqliteJobStore:
    def __init__(self, path: Path, db: SqliteDb | None = None) -> None:
        self._db = db or SqliteDb(path, SCHEMA)

    def create(self, record: JobRecord) -> None:
        with self._db.write() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (record.job_id,)).fetchone():
                raise JobAlreadyExists(record.job_id)
            if record.idempotency_key is not None:
                holder = conn.execute(
                    "SELECT job_id FROM jobs WHERE tenant = ? AND idempotency_key = ?",
                    (record.tenant, record.idempotency_key),
                ).fetchone()
                if holder:
                    raise IdempotencyKeyInUse(record.tenant, record.idempotency_key, holder[0])
            conn.execute(
                "INSERT INTO jobs (job_id, tenant, status, order_key, idempotency_key, record)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.job_id,
                    record.tenant,
                    record.status.value,
                    record.list_order_key(),
                    record.idempotency_key,
                    record.model_dump_json(),
                ),
            )

    def get(self, tenant: str, job_id: str) -> JobRecord | None:
        record = self.get_by_id(job_id)
        return record if record is not None and record.tenant == tenant else None

    def get_by_id(self, job_id: str) -> JobRecord | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def list(
        self, tenant: str, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[JobRecord], str | None]:
        check_limit(limit)
        sql = "SELECT record FROM jobs WHERE tenant = ?"
        params: builtins.list[str | int] = [tenant]
        if status is not None:
            sql += " AND status = ?"
            params.append(status.value)
        if cursor is not None:
            sql += " AND order_key < ?"
            params.append(decode_cursor(cursor, tenant, status))
        sql += " ORDER BY order_key DESC LIMIT ?"
        params.append(limit + 1)
        with self._db.read() as conn:
            rows = conn.execute(sql, params).fetchall()
        records = [JobRecord.model_validate_json(row[0]) for row in rows[:limit]]
        more = len(rows) > limit
        return records, encode_cursor(tenant, status, records[-1].list_order_key()) if more else None

    def count(self, tenant: str, statuses: Collection[JobStatus], limit: int) -> int:
        check_limit(limit)
        wanted = status_values(statuses)
        marks = ", ".join("?" * len(wanted))
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE tenant = ? AND status IN ({marks}) LIMIT ?)"
        with self._db.read() as conn:
            (counted,) = conn.execute(sql, [tenant, *wanted, limit]).fetchone()
        return int(counted)

    def transition(
        self, job_id: str, from_statuses: Collection[JobStatus], to_status: JobStatus, **fields: Any
    ) -> JobRecord:
        changes = transition_changes(from_statuses, to_status, fields)
        return self._update(job_id, from_statuses, changes, to_status, f"move to {to_status.value}")

    def update_progress(self, job_id: str, progress: Progress) -> JobRecord:
        changes = field_changes({"progress": progress})
        return self._update(job_id, {JobStatus.RUNNING}, changes, None, "update progress")

    def set_fields(self, job_id: str, *, when_status: Collection[JobStatus] | None = None, **fields: Any) -> JobRecord:
        return self._update(job_id, when_status, field_changes(fields, when_status), None, "set fields")

    def mark_dispatched(self, job_id: str) -> None:
        sql = (
            "UPDATE jobs SET record = json_set(record, '$.dispatch_pending', json('false'), '$.updated_at', ?)"
            " WHERE job_id = ?"
        )
        if self._db.write_one(sql, (utc_now().isoformat(), job_id)) == 0:
            raise JobNotFound(job_id)

    def _update(
        self,
        job_id: str,
        expected: Collection[JobStatus] | None,
        changes: dict[str, JsonValue],
        to_status: JobStatus | None,
        wanted: str,
    ) -> JobRecord:
        with self._db.write() as conn:
            row = conn.execute("SELECT status, record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            status = JobStatus(row[0])
            if expected is not None and status not in expected:
                raise TransitionConflict(job_id, status, expected, wanted)
            data = json.loads(row[1])  # the stored record is valid: it is validated once, with the changes
            data.update(changes, updated_at=utc_now().isoformat())
            if to_status is not None:
                data["status"] = to_status.value
            record = JobRecord.model_validate(data)
            conn.execute(
                "UPDATE jobs SET status = ?, record = ? WHERE job_id = ?",
                (record.status.value, record.model_dump_json(), job_id),
            )
        return record

    def find_by_idempotency_key(self, tenant: str, key: str) -> JobRecord | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT record FROM jobs WHERE tenant = ? AND idempotency_key = ?", (tenant, key)
            ).fetchone()
        return JobRecord.model_validate_json(row[0]) if row else None

    def undispatched(self, created_before: datetime, limit: int = 100) -> builtins.list[JobRecord]:
        check_limit(limit)
        with self._db.read() as conn:
            rows = conn.execute(UNDISPATCHED_SQL, (order_key_before(created_before), limit)).fetchall()
        return [JobRecord.model_validate_json(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
