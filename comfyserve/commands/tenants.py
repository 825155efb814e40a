"""``comfyserve tenants add NAME | list | revoke NAME``: API keys on the deployed stack's usage plan.

``add`` prints the new key alone on stdout, once (``KEY=$(comfyserve tenants add acme)``), and what it did on
stderr; the tenant's id in jobs and events is the key's id. The plan is ``--plan`` (an id or a name), else
``COMFYSERVE_USAGE_PLAN``, else the ``UsagePlanId`` output of the stack ``COMFYSERVE_STACK_NAME``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from comfyserve.commands.common import UsageError

HELP = "add, list and revoke tenants: API keys on the deployed stack's usage plan"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("tenants", help=HELP, description=HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def plan_option(action: argparse.ArgumentParser) -> None:
        action.add_argument(
            "--plan", help="usage plan id or name (default: $COMFYSERVE_USAGE_PLAN, else the stack's UsagePlanId)"
        )

    add = actions.add_parser("add", help="create a tenant's API key on the plan and print the key once")
    add.add_argument("name", help="the tenant's name (the key's name)")
    plan_option(add)
    add.set_defaults(func=run_add)

    listing = actions.add_parser("list", help="the tenants on the plan: name, key id (the tenant id), enabled")
    plan_option(listing)
    listing.set_defaults(func=run_list)

    revoke = actions.add_parser("revoke", help="delete a tenant's API key: its requests are refused from then on")
    revoke.add_argument("name", help="the tenant's name")
    plan_option(revoke)
    revoke.set_defaults(func=run_revoke)


def _tenants(args: argparse.Namespace) -> Any:
    import boto3

    from comfyserve.adapters.aws.tenants import Tenants, TenantSettings, find_usage_plan

    try:
        settings = TenantSettings.from_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    session = boto3.session.Session()
    apigateway = session.client("apigateway")
    plan = find_usage_plan(apigateway, session.client("cloudformation"), settings, args.plan)
    return Tenants(apigateway, plan)


def run_add(args: argparse.Namespace) -> int:
    if not args.name.strip():
        raise UsageError("a tenant needs a name")
    tenants = _tenants(args)
    tenant = tenants.add(args.name)
    print(
        f"tenant {tenant.name}: key id {tenant.key_id} (its tenant id) on usage plan {tenants.plan.id}"
        f" ({tenants.plan.name}); the key follows, shown this once",
        file=sys.stderr,
    )
    print(tenant.value)
    return 0


def run_list(args: argparse.Namespace) -> int:
    tenants = _tenants(args)
    print(f"# usage plan {tenants.plan.id} ({tenants.plan.name})")
    print("name\tkey id\tenabled\tcreated")
    for tenant in tenants.list():
        print(f"{tenant.name}\t{tenant.key_id}\t{'yes' if tenant.enabled else 'no'}\t{tenant.created}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    tenants = _tenants(args)
    tenant = tenants.revoke(args.name)
    print(f"revoked tenant {tenant.name}: key {tenant.key_id} deleted")
    return 0
