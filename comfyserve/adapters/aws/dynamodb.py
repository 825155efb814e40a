"""JobStore on one DynamoDB table.

Table design (created by ``provision.create_jobs_table`` here and by the CDK stack in the cloud):

- partition key ``pk`` (S), no sort key. A job item has ``pk = job_id`` and every JobRecord field as a
  top-level attribute, so conditional updates touch single attributes; plus ``order_key`` (see
  ``JobRecord.list_order_key``). Job ids cannot contain ``#``, so they never collide with other items.
- idempotency item ``pk = IDEMP#<tenant>#<key>`` holding ``job_id`` and ``body_hash``; created in the same
  transaction as its job, so a key is claimed exactly when its job exists.
- ``expires_at`` (epoch seconds), written when a job reaches a terminal state if the store has a retention
  (``COMFYSERVE_RECORD_RETENTION_DAYS``): the table's TTL attribute, so DynamoDB deletes finished records.
- GSI ``by_dispatch``: partition ``dispatch_shard`` (``pending#0`` … ``pending#3``, from the job id), sort
  ``order_key``, projection ALL. A job carries ``dispatch_shard`` only while ``dispatch_pending`` is set (from
  its create until its submit has sent the message and published ``Job Queued``, milliseconds normally), so the
  index holds the jobs a submit left unfinished and nothing else: the reconciler queries it, never scans. The
  shards spread the index's writes (two per submit) over several partitions.
- GSI ``by_tenant``: partition ``tenant``, sort ``order_key``, projection ALL. Only job items carry both
  attributes (sparse index). Listing queries it newest first; a status filter is a FilterExpression (pages
  are refilled until full, so a filtered page may read more items than it returns). GSI reads are
  eventually consistent: a job created a moment ago may be missing from a listing, never from ``get``.

Requests per operation: create 1 (PutItem, or TransactWriteItems with an idempotency key); get/get_by_id 1
(strongly consistent GetItem); transition/update_progress/set_fields 1 (UpdateItem returning the new item,
and the old one on a failed condition); list 1 Query per unfiltered page; find_by_idempotency_key 2;
undispatched 1 Query per shard.
"""

from __future__ import annotations

import builtins
import json
import re
import zlib
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import JsonValue

from comfyserve.adapters.aws.errors import error_code
from comfyserve.adapters.cursor import decode_cursor, encode_cursor
from comfyserve.adapters.job_writes import (
    check_limit,
    field_changes,
    order_key_before,
    status_values,
    transition_changes,
)
from comfyserve.contracts.jobs import JOB_ID_PATTERN, JobRecord, JobStatus, Progress, utc_now
from comfyserve.ports import IdempotencyKeyInUse, JobAlreadyExists, JobNotFound, TransitionConflict

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

PARTITION_KEY = "pk"
TENANT_INDEX = "by_tenant"
DISPATCH_INDEX = "by_dispatch"
DISPATCH_ATTR = "dispatch_shard"
DISPATCH_SHARDS = 4
TENANT_ATTR = "tenant"
ORDER_ATTR = "order_key"
TTL_ATTRIBUTE = "expires_at"
DAY_S = 24 * 3600
FILTERED_PAGE_SIZE = 100
CREATE_ATTEMPTS = 3

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_job_id = re.compile(JOB_ID_PATTERN)


def idempotency_pk(tenant: str, key: str) -> str:
    return f"IDEMP#{tenant}#{key}"


def dispatch_shard(job_id: str) -> str:
    return f"pending#{zlib.crc32(job_id.encode()) % DISPATCH_SHARDS}"


def _to_attributes(values: Mapping[str, JsonValue]) -> dict[str, Any]:
    # DynamoDB numbers are Decimals: round-trip through JSON so floats become exact decimal strings.
    exact = json.loads(json.dumps(values), parse_float=Decimal)
    return {name: _serializer.serialize(value) for name, value in exact.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _to_record(item: Mapping[str, Any]) -> JobRecord:
    data = {name: _plain(_deserializer.deserialize(value)) for name, value in item.items()}
    return JobRecord.model_validate(data)


class DynamoJobStore:
    """``retention_days``: a job reaching a terminal state gets ``expires_at`` that many days later (None: never)."""

    def __init__(self, client: DynamoDBClient, table_name: str, *, retention_days: int | None = None) -> None:
        self._ddb = client
        self.table_name = table_name
        self.retention_days = retention_days

    def create(self, record: JobRecord) -> None:
        item = _to_attributes(
            {
                **record.model_dump(mode="json"),
                PARTITION_KEY: record.job_id,
                ORDER_ATTR: record.list_order_key(),
                **({DISPATCH_ATTR: dispatch_shard(record.job_id)} if record.dispatch_pending else {}),
            }
        )
        new_item = "attribute_not_exists(pk)"
        if record.idempotency_key is None:
            try:
                self._ddb.put_item(TableName=self.table_name, Item=item, ConditionExpression=new_item)
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise JobAlreadyExists(record.job_id) from None
                raise
            return
        claim = _to_attributes(
            {
                PARTITION_KEY: idempotency_pk(record.tenant, record.idempotency_key),
                "job_id": record.job_id,
                "body_hash": record.body_hash,
            }
        )
        transaction: list[Any] = [
            {"Put": {"TableName": self.table_name, "Item": item, "ConditionExpression": new_item}},
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": claim,
                    "ConditionExpression": new_item,
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                self._ddb.transact_write_items(TransactItems=transaction)
                return
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons: Sequence[Mapping[str, Any]] = exc.response.get("CancellationReasons", [])
            codes = [reason.get("Code") for reason in reasons]
            if codes[:1] == ["ConditionalCheckFailed"]:
                raise JobAlreadyExists(record.job_id)
            if codes[1:2] == ["ConditionalCheckFailed"]:
                holder = reasons[1].get("Item", {}).get("job_id", {}).get("S")
                raise IdempotencyKeyInUse(record.tenant, record.idempotency_key, str(holder))
            # "TransactionConflict": a concurrent request with the same key is mid-flight; its outcome decides.
            if "TransactionConflict" not in codes or attempt == CREATE_ATTEMPTS:
                raise RuntimeError(f"job create transaction cancelled: {codes}")

    def get(self, tenant: str, job_id: str) -> JobRecord | None:
        record = self.get_by_id(job_id)
        return record if record is not None and record.tenant == tenant else None

    def get_by_id(self, job_id: str) -> JobRecord | None:
        if not _job_id.match(job_id):
            return None
        response = self._ddb.get_item(
            TableName=self.table_name, Key={PARTITION_KEY: {"S": job_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return _to_record(item) if item else None

    def list(
        self, tenant: str, status: JobStatus | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[JobRecord], str | None]:
        check_limit(limit)
        names = {"#tenant": TENANT_ATTR}
        values: dict[str, Any] = {":tenant": {"S": tenant}}
        condition = "#tenant = :tenant"
        if cursor is not None:
            names["#order"] = ORDER_ATTR
            condition += " AND #order < :after"
            values[":after"] = {"S": decode_cursor(cursor, tenant, status)}
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": TENANT_INDEX,
            "KeyConditionExpression": condition,
            "ScanIndexForward": False,
        }
        if status is not None:
            names["#status"] = "status"
            values[":status"] = {"S": status.value}
            query["FilterExpression"] = "#status = :status"
        query["ExpressionAttributeNames"] = names
        query["ExpressionAttributeValues"] = values
        items: builtins.list[Mapping[str, Any]] = []
        while len(items) <= limit:
            wanted = limit + 1 - len(items)
            page_size = max(wanted, FILTERED_PAGE_SIZE) if status is not None else wanted
            response = self._ddb.query(**query, Limit=page_size)
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        records = [_to_record(item) for item in items[:limit]]
        more = len(items) > limit
        return records, encode_cursor(tenant, status, records[-1].list_order_key()) if more else None

    def count(self, tenant: str, statuses: Collection[JobStatus], limit: int) -> int:
        check_limit(limit)
        wanted = status_values(statuses)
        values: dict[str, Any] = {":tenant": {"S": tenant}}
        values.update({f":s{index}": {"S": status} for index, status in enumerate(wanted)})
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": TENANT_INDEX,
            "KeyConditionExpression": "#tenant = :tenant",
            "FilterExpression": f"#status IN ({', '.join(f':s{index}' for index in range(len(wanted)))})",
            "ExpressionAttributeNames": {"#tenant": TENANT_ATTR, "#status": "status"},
            "ExpressionAttributeValues": values,
            "Select": "COUNT",
        }
        counted = 0
        while counted < limit:
            response = self._ddb.query(**query)
            counted += response["Count"]
            if "LastEvaluatedKey" not in response:
                break
            query["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return min(counted, limit)

    def transition(
        self, job_id: str, from_statuses: Collection[JobStatus], to_status: JobStatus, **fields: Any
    ) -> JobRecord:
        changes = transition_changes(from_statuses, to_status, fields)
        changes["status"] = to_status.value
        if to_status.is_terminal and self.retention_days is not None:
            changes[TTL_ATTRIBUTE] = int(utc_now().timestamp()) + self.retention_days * DAY_S
        return self._update(job_id, from_statuses, changes, f"move to {to_status.value}")

    def update_progress(self, job_id: str, progress: Progress) -> JobRecord:
        return self._update(job_id, {JobStatus.RUNNING}, field_changes({"progress": progress}), "update progress")

    def set_fields(self, job_id: str, *, when_status: Collection[JobStatus] | None = None, **fields: Any) -> JobRecord:
        return self._update(job_id, when_status, field_changes(fields, when_status), "set fields")

    def mark_dispatched(self, job_id: str) -> None:
        self.set_fields(job_id, dispatch_pending=False)  # one UpdateItem either way

    def _update(
        self,
        job_id: str,
        expected: Collection[JobStatus] | None,
        changes: dict[str, JsonValue],
        wanted: str,
    ) -> JobRecord:
        if not _job_id.match(job_id):
            raise JobNotFound(job_id)
        changes["updated_at"] = utc_now().isoformat()
        remove = ""
        if changes.get("dispatch_pending") is True:
            changes[DISPATCH_ATTR] = dispatch_shard(job_id)
        elif "dispatch_pending" in changes:
            remove = f" REMOVE #{DISPATCH_ATTR}"  # out of the dispatch index
        attributes = _to_attributes(changes)
        names = {f"#f{i}": name for i, name in enumerate(attributes)}
        if remove:
            names[f"#{DISPATCH_ATTR}"] = DISPATCH_ATTR
        values = {f":v{i}": value for i, value in enumerate(attributes.values())}
        condition = "attribute_exists(pk)"
        if expected is not None:
            names["#expected_status"] = "status"
            expected_values = {f":s{i}": {"S": status.value} for i, status in enumerate(expected)}
            values.update(expected_values)
            condition += f" AND #expected_status IN ({', '.join(expected_values)})"
        try:
            response = self._ddb.update_item(
                TableName=self.table_name,
                Key={PARTITION_KEY: {"S": job_id}},
                UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(attributes))) + remove,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            error_response: Mapping[str, Any] = exc.response
            old = error_response.get("Item")
            if not old:
                raise JobNotFound(job_id) from None
            current = JobStatus(old["status"]["S"])
            raise TransitionConflict(job_id, current, expected or (), wanted) from None
        return _to_record(response["Attributes"])

    def find_by_idempotency_key(self, tenant: str, key: str) -> JobRecord | None:
        response = self._ddb.get_item(
            TableName=self.table_name,
            Key={PARTITION_KEY: {"S": idempotency_pk(tenant, key)}},
            ConsistentRead=True,
        )
        claim = response.get("Item")
        return self.get(tenant, claim["job_id"]["S"]) if claim else None

    def undispatched(self, created_before: datetime, limit: int = 100) -> builtins.list[JobRecord]:
        check_limit(limit)
        before = order_key_before(created_before)
        items: builtins.list[Mapping[str, Any]] = []
        for shard in range(DISPATCH_SHARDS):
            query: dict[str, Any] = {
                "TableName": self.table_name,
                "IndexName": DISPATCH_INDEX,
                "KeyConditionExpression": "#shard = :shard AND #order < :before",
                "ExpressionAttributeNames": {"#shard": DISPATCH_ATTR, "#order": ORDER_ATTR},
                "ExpressionAttributeValues": {":shard": {"S": f"pending#{shard}"}, ":before": {"S": before}},
                "Limit": limit,
            }
            items.extend(self._ddb.query(**query).get("Items", []))
        records = sorted((_to_record(item) for item in items), key=JobRecord.list_order_key)
        return records[:limit]
