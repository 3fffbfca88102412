"""`embedgate tenants create|list|show|update|delete|export|import`."""

from __future__ import annotations

import json
from typing import Any

import click

from embedgate.cli.backup import export_tenant, import_tenant
from embedgate.cli.common import remember, target_flags_after, target_options
from embedgate.cli.target import run


@click.group()
@target_options
def tenants(ctx: click.Context, **options: Any) -> None:
    """Create, list, show, update, delete, export and import tenants."""
    remember(ctx, **options)


def _policy(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("a JSON object, e.g. '{\"rpm\": 600}'")
    return parsed


@tenants.command("create")
@click.argument("tenant_id")
@click.option("--name")
@click.option("--plan")
@click.option("--policy", help="Policy overrides as JSON, e.g. '{\"rpm\": 600}'.")
@click.pass_context
@target_flags_after
def create_tenant(ctx: click.Context, tenant_id: str, name: str | None, plan: str | None,
                  policy: str | None) -> None:  # fmt: skip
    """Create tenant TENANT_ID (lowercase letters, digits, dashes) on a plan."""
    run(ctx, "create_tenant", tenant_id=tenant_id, name=name, plan=plan,
        policy=_policy(policy) or {})  # fmt: skip


@tenants.command("list")
@click.pass_context
@target_flags_after
def list_tenants(ctx: click.Context) -> None:
    """List every tenant with its plan, status and effective policy."""
    run(ctx, "list_tenants")


@tenants.command("show")
@click.argument("tenant_id")
@click.pass_context
@target_flags_after
def show_tenant(ctx: click.Context, tenant_id: str) -> None:
    """Show one tenant with its effective policy."""
    run(ctx, "show_tenant", tenant_id=tenant_id)


@tenants.command("update")
@click.argument("tenant_id")
@click.option("--name")
@click.option("--plan")
@click.option("--status", type=click.Choice(["active", "suspended"]))
@click.option("--policy", help="Replacement policy overrides as JSON.")
@click.pass_context
@target_flags_after
def update_tenant(ctx: click.Context, tenant_id: str, name: str | None, plan: str | None,
                  status: str | None, policy: str | None) -> None:  # fmt: skip
    """Change a tenant's name, plan, status or policy overrides."""
    run(ctx, "update_tenant", tenant_id=tenant_id, name=name, plan=plan, status=status,
        policy=_policy(policy))  # fmt: skip


@tenants.command("delete")
@click.argument("tenant_id")
@click.confirmation_option(prompt="Delete this tenant and everything it owns?")
@click.pass_context
@target_flags_after
def delete_tenant(ctx: click.Context, tenant_id: str) -> None:
    """Delete a tenant with its keys, collections and documents (usage records stay)."""
    run(ctx, "delete_tenant", tenant_id=tenant_id)


tenants.add_command(export_tenant)
tenants.add_command(import_tenant)
