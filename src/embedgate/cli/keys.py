"""`embedgate keys create|list|revoke|rotate`: a key's secret is printed once, on creation or
rotation, and never written anywhere else.
"""

from __future__ import annotations

from typing import Any

import click

from embedgate.cli.common import remember, target_flags_after, target_options
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
@target_flags_after
def create_key(ctx: click.Context, tenant_id: str, name: str, expires_in: int | None,
               scopes: tuple[str, ...]) -> None:  # fmt: skip
    """Issue a key for TENANT_ID; the key is printed once and stored only as a digest."""
    options: dict[str, Any] = {"name": name, "expires_in": expires_in}
    if scopes:
        options["scopes"] = list(scopes)
    run(ctx, "create_key", tenant_id=tenant_id, **options)
    click.echo("Store the key now: it is shown only once.", err=True)


@keys.command("list")
@click.argument("tenant_id")
@click.pass_context
@target_flags_after
def list_keys(ctx: click.Context, tenant_id: str) -> None:
    """List a tenant's keys (id, name, prefix, scopes, dates), never their secrets."""
    run(ctx, "list_keys", tenant_id=tenant_id)


@keys.command("revoke")
@click.argument("tenant_id")
@click.argument("key_id")
@click.pass_context
@target_flags_after
def revoke_key(ctx: click.Context, tenant_id: str, key_id: str) -> None:
    """Revoke KEY_ID: servers refuse it within 2 seconds (their key cache)."""
    run(ctx, "revoke_key", tenant_id=tenant_id, key_id=key_id)


@keys.command("rotate")
@click.argument("tenant_id")
@click.argument("key_id")
@click.option("--grace-period", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seconds the old key keeps working.")  # fmt: skip
@click.pass_context
@target_flags_after
def rotate_key(ctx: click.Context, tenant_id: str, key_id: str, grace_period: int) -> None:
    """Replace KEY_ID by a new key; the old one works for --grace-period seconds more."""
    run(ctx, "rotate_key", tenant_id=tenant_id, key_id=key_id, grace_period=grace_period)
    click.echo("Store the new key now: it is shown only once.", err=True)
