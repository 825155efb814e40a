"""Tenants of a deployed stack: one API Gateway API key each, on the stack's usage plan (or a named one). The
API reads the tenant from the key's id, so a tenant's jobs, events and outbox paths carry that id. boto3 only:
``comfyserve tenants`` runs from a laptop with the deployer's credentials."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import Field

from comfyserve.engine.errors import ComfyServeError
from comfyserve.settings import EnvSettings

USAGE_PLAN_OUTPUT = "UsagePlanId"  # the stack's CfnOutput (infra/stack.py)


class TenantSettings(EnvSettings):
    """Where ``comfyserve tenants`` finds the usage plan of the deployment."""

    doc_title = "Tenants (`comfyserve tenants`)"

    usage_plan: str | None = Field(
        default=None,
        description="usage plan id or name the keys go on (unset: the stack's UsagePlanId output; --plan overrides)",
    )
    stack_name: str = Field(default="comfyserve", min_length=1, description="the CloudFormation stack deployed")


class TenantError(ComfyServeError):
    """A tenant or usage plan that is not there, a name taken twice, or an AWS call that failed."""


@dataclass(frozen=True)
class UsagePlan:
    id: str
    name: str


@dataclass(frozen=True)
class Tenant:
    name: str
    key_id: str
    enabled: bool
    created: str
    value: str | None = None  # the key itself, returned once by :meth:`Tenants.add`


class Tenants:
    def __init__(self, apigateway: Any, plan: UsagePlan) -> None:
        self._apigw = apigateway
        self.plan = plan

    def list(self) -> list[Tenant]:
        """The keys on the plan, by name."""
        on_plan = {item["id"] for item in _items(self._apigw, "get_usage_plan_keys", usagePlanId=self.plan.id)}
        keys = [key for key in _items(self._apigw, "get_api_keys") if key["id"] in on_plan]
        return sorted((_tenant(key) for key in keys), key=lambda tenant: (tenant.name, tenant.key_id))

    def add(self, name: str) -> Tenant:
        """A new enabled key named ``name`` on the plan; a name already on the plan is refused."""
        taken = [tenant for tenant in self.list() if tenant.name == name]
        if taken:
            raise TenantError(f"tenant {name!r} already has a key on usage plan {self.plan.id} ({taken[0].key_id})")
        key = _call(self._apigw.create_api_key, name=name, enabled=True, description=f"comfyserve tenant {name}")
        try:
            _call(self._apigw.create_usage_plan_key, usagePlanId=self.plan.id, keyId=key["id"], keyType="API_KEY")
        except TenantError:
            self._apigw.delete_api_key(apiKey=key["id"])  # no key left behind that no plan admits
            raise
        return _tenant(key, with_value=True)

    def revoke(self, name: str) -> Tenant:
        """Take the key named ``name`` off the plan and delete it: its requests are refused from then on."""
        matches = [tenant for tenant in self.list() if tenant.name == name]
        if not matches:
            raise TenantError(f"no tenant {name!r} on usage plan {self.plan.id} ({self.plan.name})")
        if len(matches) > 1:
            ids = ", ".join(tenant.key_id for tenant in matches)
            raise TenantError(f"tenant {name!r} has {len(matches)} keys on usage plan {self.plan.id} ({ids})")
        _call(self._apigw.delete_usage_plan_key, usagePlanId=self.plan.id, keyId=matches[0].key_id)
        _call(self._apigw.delete_api_key, apiKey=matches[0].key_id)
        return matches[0]


def find_usage_plan(apigateway: Any, cloudformation: Any, settings: TenantSettings, plan: str | None) -> UsagePlan:
    """``plan`` (an id or a name), else ``COMFYSERVE_USAGE_PLAN``, else the stack's ``UsagePlanId`` output."""
    wanted = plan or settings.usage_plan
    if wanted is None:
        wanted = _stack_output(cloudformation, settings.stack_name, USAGE_PLAN_OUTPUT)
    plans = [UsagePlan(item["id"], item.get("name", "")) for item in _items(apigateway, "get_usage_plans")]
    by_id = [found for found in plans if found.id == wanted]
    by_name = [found for found in plans if found.name == wanted]
    if by_id:
        return by_id[0]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        raise TenantError(f"{len(by_name)} usage plans are named {wanted!r}: pass one's id with --plan")
    raise TenantError(f"no usage plan {wanted!r} (an id or a name)")


def _stack_output(cloudformation: Any, stack_name: str, output: str) -> str:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise TenantError(
            f"stack {stack_name!r}: {_message(exc)} (set COMFYSERVE_STACK_NAME, or name the plan with --plan)"
        ) from None
    for item in stacks[0].get("Outputs", []) if stacks else []:
        if item.get("OutputKey") == output:
            return str(item["OutputValue"])
    raise TenantError(f"stack {stack_name!r} has no {output} output (name the plan with --plan)")


def _tenant(key: dict[str, Any], with_value: bool = False) -> Tenant:
    created = key.get("createdDate")
    return Tenant(
        name=str(key.get("name", "")),
        key_id=str(key["id"]),
        enabled=bool(key.get("enabled", False)),
        created=created.isoformat() if isinstance(created, datetime) else str(created or ""),
        value=str(key["value"]) if with_value else None,
    )


def _items(apigateway: Any, operation: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a paginated API Gateway listing."""
    try:
        pages = apigateway.get_paginator(operation).paginate(**kwargs)
        return [item for page in pages for item in page.get("items", [])]
    except ClientError as exc:
        raise TenantError(_message(exc)) from None


def _call(method: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        response: dict[str, Any] = method(**kwargs)
    except ClientError as exc:
        raise TenantError(_message(exc)) from None
    return response


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', str(exc))}"
