"""`embedgate audit export`: the audit log as JSON Lines or CSV, for archives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import click

from embedgate.cli.common import (
    open_output,
    output_option,
    override,
    remember,
    target_flags_on_command,
    target_options,
)
from embedgate.cli.target import Admin, execute
from embedgate.tenancy.usage import to_csv

AUDIT_COLUMNS = ("id", "at", "event", "actor", "tenant_id", "key_prefix", "client_ip", "detail")
AUDIT_PAGE = 1000


@click.group()
@target_options
def audit(ctx: click.Context, **options: Any) -> None:
    """Export the audit log: admin actions and security events."""
    remember(ctx, **options)


@audit.command("export")
@click.option("--tenant", help="Only events about this tenant.")
@click.option("--event", help="Only this event, e.g. key.created or auth.failed.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)  # fmt: skip
@output_option
@target_flags_on_command
@click.pass_context
def export_audit(ctx: click.Context, /, tenant: str | None, event: str | None, output_format: str,
                 output: Path | None, **target: Any) -> None:  # fmt: skip
    """Every matching event, newest first, one page of the log at a time."""
    override(ctx, **target)

    async def export(admin: Admin) -> int:
        count, before = 0, None
        with open_output(output) as out:
            while True:
                page = await admin.call("audit_page", tenant=tenant, event=event,
                                        before=before, limit=AUDIT_PAGE)  # fmt: skip
                _write_audit(out, page, output_format, header=count == 0)
                count += len(page)
                if len(page) < AUDIT_PAGE:
                    return count
                before = page[-1]["id"]

    count = execute(ctx, export)
    click.echo(f"{count} audit events exported.", err=True)


def _write_audit(out: IO[str], events: list[dict[str, Any]], output_format: str, *,
                 header: bool) -> None:  # fmt: skip
    if output_format == "csv":
        out.write(to_csv(events, AUDIT_COLUMNS, header=header))
        return
    for event in events:
        out.write(json.dumps(event, ensure_ascii=False) + "\n")
