"""`embedgate usage export`: metered usage as CSV or JSON, for billing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from embedgate.cli.common import (
    open_output,
    output_option,
    override,
    remember,
    target_flags_on_command,
    target_options,
)
from embedgate.cli.target import execute
from embedgate.tenancy.usage import CSV_COLUMNS, to_csv


@click.group()
@target_options
def usage(ctx: click.Context, **options: Any) -> None:
    """Export metered usage (requests, errors, inputs, tokens) per tenant and hour or day."""
    remember(ctx, **options)


@usage.command("export")
@click.option("--tenant", help="Only this tenant; default: every tenant.")
@click.option("--start", help="ISO-8601 date or date-time, UTC unless it names an offset; "
              "default: the start of this month.")  # fmt: skip
@click.option("--end", help="Same, excluded; default: now.")
@click.option("--granularity", type=click.Choice(["hour", "day"]), default="day",
              show_default=True)  # fmt: skip
@click.option("--format", "output_format", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)  # fmt: skip
@output_option
@target_flags_on_command
@click.pass_context
def export_usage(ctx: click.Context, /, tenant: str | None, start: str | None, end: str | None,
                 granularity: str, output_format: str, output: Path | None,
                 **target: Any) -> None:  # fmt: skip
    """Requests, errors, inputs and tokens per tenant and UTC hour or day (CSV for billing).

    Inputs and tokens count successful requests only; the range is [start, end).
    """
    override(ctx, **target)
    query = {"tenant": tenant, "start": start, "end": end, "granularity": granularity}
    rows = execute(ctx, lambda admin: admin.call("usage", **query))
    text = (to_csv(rows, CSV_COLUMNS) if output_format == "csv"
            else json.dumps(rows, indent=2, ensure_ascii=False) + "\n")  # fmt: skip
    try:
        with open_output(output) as out:
            out.write(text)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc
