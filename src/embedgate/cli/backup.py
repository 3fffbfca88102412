"""`embedgate tenants export TENANT_ID FILE` and `embedgate tenants import FILE`: back up
and restore one tenant (docs/backup.md), on the data dir or database directly.

Not through ``--server``: a backup holds every document and vector of a tenant (gigabytes)
and its key digests; it is an operator's job on the machine or database, like pg_dump, not
something to stream through the public admin API and its proxies.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from embedgate.backup.service import Backup, UsageScope
from embedgate.cli.common import override, target_flags
from embedgate.cli.target import Admin, LocalAdmin, execute
from embedgate.docstore.stores import open_store
from embedgate.tenancy.keys import utcnow

T = TypeVar("T")
NOT_REMOTE = (
    "`tenants export` and `tenants import` work on the data dir or the database directly "
    "(EMBEDGATE_DATA_DIR, EMBEDGATE_DATABASE_URL, EMBEDGATE_VECTOR_URL), not through a "
    "server: drop --server and unset EMBEDGATE_SERVER (see docs/backup.md)"
)


class Bar:
    """``backup.Progress`` as click progress bars on standard error, one per stage."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, label: str, total: int) -> None:
        self.close()
        self._bar = click.progressbar(length=total, label=label, file=sys.stderr)
        self._bar.__enter__()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _local_flags(command: Callable[..., Any]) -> Any:
    """The target flags of the other admin commands, less --server."""
    return target_flags(command, env=False, server=False)


def _run(ctx: click.Context, action: Callable[[Backup], Awaitable[T]]) -> T:
    if ctx.obj.get("server"):
        raise click.ClickException(NOT_REMOTE)
    bar = Bar()

    async def work(admin: Admin) -> T:
        assert isinstance(admin, LocalAdmin)  # no --server, so the data dir or database
        control, settings = admin.control, admin.settings
        models = frozenset(name for model, spec in settings.models.items()
                           for name in (model, *spec.aliases))  # fmt: skip
        try:
            store = await open_store(settings)
        except Exception as exc:  # pgvector missing, database down: one line, no traceback
            raise click.ClickException(f"the document store cannot be opened: {exc}") from exc
        try:
            return await action(Backup(control.store, store, control.audit, control.keys,
                                       settings.plans, models, utcnow, bar))  # fmt: skip
        finally:
            await store.aclose()

    try:
        return execute(ctx, work)
    finally:
        bar.close()


@click.command("export")
@click.argument("tenant_id")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--usage", type=click.Choice(["all", "month", "none"]), default="all",
              show_default=True, help="Usage records to include: all that are kept, this "
              "month's (enough for quotas), or none.")  # fmt: skip
@_local_flags
@click.pass_context
def export_tenant(ctx: click.Context, /, tenant_id: str, file: Path, usage: UsageScope,
                  **target: Any) -> None:  # fmt: skip
    """Write one tenant, complete, to FILE (JSON Lines; gzip if FILE ends in .gz).

    The tenant, its API keys (digests only), collections, documents with their vectors, and
    usage records. FILE is created with mode 0600 and replaced only once complete.
    """
    override(ctx, **target)
    summary = _run(ctx, lambda backup: backup.export(tenant_id, file, usage=usage))
    click.echo(json.dumps(summary, indent=2))


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True,
              help="If the tenant exists, delete all of its data first.")  # fmt: skip
@click.option("--plan", help="Restore under this plan instead of the file's.")
@click.option("--untrusted-source", is_flag=True,
              help="Import a file this server did not sign (another server's, an older "
              "embedgate's, or an edited one) as untrusted: without its API keys, "
              "policy overrides and plan, and suspended.")  # fmt: skip
@_local_flags
@click.pass_context
def import_tenant(ctx: click.Context, /, file: Path, replace: bool, plan: str | None,
                  untrusted_source: bool, **target: Any) -> None:  # fmt: skip
    """Restore the tenant in FILE (from `tenants export`) under its own id.

    The whole file and its signature are checked before anything is written; a file not
    signed under this server's secret is refused unless --untrusted-source. An existing
    tenant is refused unless --replace.
    """
    override(ctx, **target)
    summary = _run(ctx, lambda backup: backup.restore(file, replace=replace, plan=plan,
                                                      untrusted=untrusted_source))  # fmt: skip
    click.echo(json.dumps(summary, indent=2))
    if not summary["trusted"]:
        left = summary["left_out"]
        click.echo(f"Warning: imported untrusted (not signed by this server): its {left['keys']} "
                   "API keys were not imported: issue new ones with `embedgate keys create`; "
                   f"its policy overrides were not applied and it has the plan "
                   f"{summary['plan']!r}; it stays suspended: review it, then run `embedgate "
                   f"tenants update {summary['tenant']} --status active`.", err=True)  # fmt: skip
    for model in summary["unknown_models"]:
        click.echo(f"Warning: model {model!r} is not in this server's registry: its "
                   "collections answer keyword searches, but vector searches and new "
                   "documents need the model.", err=True)  # fmt: skip
