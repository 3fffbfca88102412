"""`embedgate keys create|list|revoke|rotate`: a key's secret is printed once, on creation or
rotation, and never written anywhere else.
"""

from __future__ import annotations

from typing import Any

import click

from embedgate.cli.common import remember, target_options
from embedgate.cli.target import run


@click.group()
@target_options
def keys(ctx: click.Context, **options: Any) -> None:
    """Create, list, revoke and rotate a tenant's API keys."""
    remember(ctx, **options)


@keys.command("create")
@click.argument("tenant_id")
@click.option("--name", default="")
@click.option("--expires-in", type=click.IntRange(min=1), help="Seconds until it expires.")
@click.option("--scope", "scopes", multiple=True,
              type=click.Choice(["embeddings", "search:read", "search:write"]),
              help="Repeat for several; default: all.")  # fmt: skip
@click.pass_context
def create_key(ctx: click.Context, tenant_id: str, name: str, expires_in: int | None,
               scopes: tuple[str, ...]) -> None:  # fmt: skip
    options: dict[str, Any] = {"name": name, "expires_in": expires_in}
    if scopes:
        options["scopes"] = list(scopes)
    run(ctx, "create_key", tenant_id=tenant_id, **options)
    click.echo("Store the key now: it is shown only once.", err=True)


@keys.command("list")
@click.argument("tenant_id")
@click.pass_context
def list_keys(ctx: click.Context, tenant_id: str) -> None:
    run(ctx, "list_keys", tenant_id=tenant_id)


@keys.command("revoke")
@click.argument("tenant_id")
@click.argument("key_id")
@click.pass_context
def revoke_key(ctx: click.Context, tenant_id: str, key_id: str) -> None:
    run(ctx, "revoke_key", tenant_id=tenant_id, key_id=key_id)


@keys.command("rotate")
@click.argument("tenant_id")
@click.argument("key_id")
@click.option("--grace-period", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seconds the old key keeps working.")  # fmt: skip
@click.pass_context
def rotate_key(ctx: click.Context, tenant_id: str, key_id: str, grace_period: int) -> None:
    run(ctx, "rotate_key", tenant_id=tenant_id, key_id=key_id, grace_period=grace_period)
    click.echo("Store the new key now: it is shown only once.", err=True)
