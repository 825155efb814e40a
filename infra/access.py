"""Who may touch what in the results bucket and the jobs table: the key prefixes the code writes (one place,
derived from the functions that make the keys) and each component's grants, no wider than the calls it makes."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

from comfyserve.contracts.manifest import job_prefix
from comfyserve.service import keys
from comfyserve.service.catalog_source import DEFAULT_CATALOG_KEY


def _top(key: str) -> str:
    return key.split("/", 1)[0] + "/"


WORKFLOWS = _top(keys.workflow_key("t", "j"))
INPUTS = _top(keys.input_key("t", "j", "n"))
OUTPUTS = _top(job_prefix("t", "j"))
UPLOADS = _top(keys.uploads_prefix("t"))
HISTORY = _top(keys.hidden_history_key("t"))
ASSETS = "assets/"  # comfyserve.service.assets: one record per asset (its bytes live under uploads/)
CATALOG = _top(DEFAULT_CATALOG_KEY)
# What one job leaves behind: these age out after retention_days; the catalog, the scaler's state, uploads and
# assets (a tenant's own files) and history do not.
JOB_PREFIXES = (WORKFLOWS, INPUTS, OUTPUTS)

# DynamoDB actions by role in the job's life (comfyserve.adapters.aws.dynamodb: a transaction of Puts is PutItem).
SUBMIT_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query")
RECORD_TABLE_ACTIONS = ("dynamodb:GetItem", "dynamodb:UpdateItem")
# The reconciler reads the by_dispatch index, then each record, and clears its flag.
RECONCILE_TABLE_ACTIONS = ("dynamodb:Query", *RECORD_TABLE_ACTIONS)


@dataclass(frozen=True, kw_only=True)
class ObjectAccess:
    """Key patterns one component reads, writes and deletes."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.read, *self.write, *self.delete)))

    def grant(self, bucket: s3.IBucket, grantee: iam.IGrantable) -> None:
        for pattern in self.read:
            bucket.grant_read(grantee, pattern)
        for pattern in self.write:
            bucket.grant_put(grantee, pattern)
        for pattern in self.delete:
            bucket.grant_delete(grantee, pattern)


def _all(*prefixes: str) -> tuple[str, ...]:
    return tuple(f"{prefix}*" for prefix in prefixes)


# The worker reads a job's workflow, inputs and uploads, writes its outputs (manifest last; it reads a manifest
# back after a lost heartbeat) and publishes the catalog it serves. It deletes nothing.
WORKER = ObjectAccess(read=_all(WORKFLOWS, INPUTS, UPLOADS, OUTPUTS), write=(*_all(OUTPUTS), DEFAULT_CATALOG_KEY))
# The API stores workflows, inputs, uploads, assets and history, serves outputs, reads the catalog; a failed
# submit removes what it wrote, and deleting an asset removes its record and bytes.
API = ObjectAccess(
    read=_all(WORKFLOWS, INPUTS, UPLOADS, ASSETS, HISTORY, OUTPUTS, CATALOG),
    write=_all(WORKFLOWS, INPUTS, UPLOADS, ASSETS, HISTORY),
    delete=_all(WORKFLOWS, INPUTS, UPLOADS, ASSETS),
)
# The drop folder submits (workflows, inputs) and copies a finished job's outputs to the inbox bucket's outbox.
DROP_FOLDER = ObjectAccess(
    read=_all(WORKFLOWS, INPUTS, OUTPUTS, CATALOG), write=_all(WORKFLOWS, INPUTS), delete=_all(WORKFLOWS, INPUTS)
)
COMPLETION = ObjectAccess(read=_all(OUTPUTS))
# A dead job's failure manifest completes it (unless the worker wrote one).
DEAD_LETTER = ObjectAccess(read=_all(OUTPUTS), write=_all(OUTPUTS))


def grant_table(table: dynamodb.ITable, grantee: iam.IGrantable, actions: tuple[str, ...]) -> None:
    """``actions`` on the table and its indexes."""
    table.grant(grantee, *actions)
