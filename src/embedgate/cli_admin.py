"""`embedgate tenants|keys|usage|audit ...`: on the data dir or database directly, or on a
running server (`--server URL`, with the admin key from the environment or its file).

Both ways print the JSON the admin API returns; a key's secret is printed once, on creation
or rotation, and never written anywhere else. `usage export` and `audit export` write CSV,
JSON or JSON Lines for billing and archives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlencode

import click
import httpx

from embedgate.api.admin import audit_json, key_json, tenant_json
from embedgate.config import Settings
from embedgate.errors import EmbedgateError
from embedgate.keyfiles import SecretFileError, read_secret_file
from embedgate.runtime import ControlPlane
from embedgate.search.stores import open_store
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.usage import CSV_COLUMNS, to_csv

ACTOR = "cli"
AUDIT_COLUMNS = ("id", "at", "event", "actor", "tenant_id", "key_prefix", "client_ip", "detail")
AUDIT_PAGE = 1000
T = TypeVar("T")


class Admin(Protocol):
    async def call(self, operation: str, **args: Any) -> Any: ...


class LocalAdmin:
    def __init__(self, control: ControlPlane, settings: Settings) -> None:
        self._c = control
        self._settings = settings

    @property
    def control(self) -> ControlPlane:
        return self._c

    @property
    def settings(self) -> Settings:
        return self._settings

    async def call(self, operation: str, **args: Any) -> Any:
        return await getattr(self, f"_{operation}")(**args)

    async def _create_tenant(self, tenant_id: str, name: str | None, plan: str | None,
                             policy: dict[str, Any]) -> Any:  # fmt: skip
        tenant = await self._c.tenants.create(
            tenant_id, name=name, plan=plan, policy=Policy.model_validate(policy), actor=ACTOR
        )
        return tenant_json(tenant, self._c.tenants.effective(tenant))

    async def _list_tenants(self) -> Any:
        tenants, _ = await self._c.tenants.page(None, 10_000)
        return [tenant_json(t, self._c.tenants.effective(t)) for t in tenants]

    async def _show_tenant(self, tenant_id: str) -> Any:
        tenant = await self._c.tenants.get(tenant_id)
        return tenant_json(tenant, self._c.tenants.effective(tenant))

    async def _update_tenant(self, tenant_id: str, **changes: Any) -> Any:
        if changes.get("policy") is not None:
            changes["policy"] = Policy.model_validate(changes["policy"])
        tenant = await self._c.tenants.update(tenant_id, actor=ACTOR, **changes)
        return tenant_json(tenant, self._c.tenants.effective(tenant))

    async def _delete_tenant(self, tenant_id: str) -> Any:
        await self._c.tenants.get(tenant_id)  # 404 before anything is erased
        store = await open_store(self._settings)
        try:
            await self._c.tenants.delete(tenant_id, actor=ACTOR, documents=store)
        finally:
            await store.aclose()
        return {"id": tenant_id, "object": "tenant", "deleted": True}

    async def _create_key(self, tenant_id: str, **options: Any) -> Any:
        issued = await self._c.key_admin.create(tenant_id, actor=ACTOR, **options)
        return key_json(issued.record, issued)

    async def _list_keys(self, tenant_id: str) -> Any:
        return [key_json(k) for k in await self._c.key_admin.listed(tenant_id)]

    async def _revoke_key(self, tenant_id: str, key_id: str) -> Any:
        await self._c.key_admin.revoke(tenant_id, key_id, actor=ACTOR)
        return {"id": key_id, "object": "api_key", "deleted": True}

    async def _rotate_key(self, tenant_id: str, key_id: str, grace_period: int) -> Any:
        issued = await self._c.key_admin.rotate(
            tenant_id, key_id, actor=ACTOR, grace_period=grace_period
        )
        return key_json(issued.record, issued)

    async def _usage(self, **query: str | None) -> Any:
        meter = self._c.usage
        return await meter.report(meter.query(**query))

    async def _audit_page(self, tenant: str | None, event: str | None, before: int | None,
                          limit: int) -> Any:  # fmt: skip
        events = await self._c.store.list_audit(
            tenant_id=tenant, event=event, before_id=before, limit=limit
        )
        return [audit_json(e) for e in events]


class RemoteAdmin:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._http = client

    async def call(self, operation: str, **args: Any) -> Any:
        method, path, body = _ROUTES[operation](**args)
        response = await self._http.request(method, path, json=body)
        payload = response.json()
        if response.status_code >= 400:
            error = payload.get("error", {})
            raise EmbedgateError(response.status_code, str(error.get("message")),
                                 code=error.get("code"))  # fmt: skip
        return payload.get("data", payload) if payload.get("object") == "list" else payload


def _tenant_route(tenant_id: str) -> str:
    return f"/admin/tenants/{tenant_id}"


def _with_query(path: str, **params: Any) -> str:
    given = {k: v for k, v in params.items() if v is not None}
    return f"{path}?{urlencode(given)}" if given else path


_ROUTES: dict[str, Callable[..., tuple[str, str, Any]]] = {
    "create_tenant": lambda tenant_id, **body: (
        "POST", "/admin/tenants", {"id": tenant_id, **{k: v for k, v in body.items() if v}}),
    "list_tenants": lambda: ("GET", "/admin/tenants?limit=1000", None),
    "show_tenant": lambda tenant_id: ("GET", _tenant_route(tenant_id), None),
    "update_tenant": lambda tenant_id, **body: (
        "PATCH", _tenant_route(tenant_id), {k: v for k, v in body.items() if v is not None}),
    "delete_tenant": lambda tenant_id: ("DELETE", _tenant_route(tenant_id), None),
    "create_key": lambda tenant_id, **body: (
        "POST", f"{_tenant_route(tenant_id)}/keys", body),
    "list_keys": lambda tenant_id: ("GET", f"{_tenant_route(tenant_id)}/keys", None),
    "revoke_key": lambda tenant_id, key_id: (
        "DELETE", f"{_tenant_route(tenant_id)}/keys/{key_id}", None),
    "rotate_key": lambda tenant_id, key_id, grace_period: (
        "POST", f"{_tenant_route(tenant_id)}/keys/{key_id}/rotate",
        {"grace_period": grace_period}),
    "usage": lambda **query: ("GET", _with_query("/admin/usage", format="json", **query), None),
    "audit_page": lambda **query: ("GET", _with_query("/admin/audit", **query), None),
}  # fmt: skip


@asynccontextmanager
async def _open(ctx: click.Context) -> Any:
    from embedgate.cli import load_settings

    options = ctx.obj
    settings = load_settings({"data_dir": options["data_dir"], "config": options["config"]})
    if options["server"]:
        key = _admin_key(settings.data_dir, settings)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=options["server"], headers=headers) as client:
            yield RemoteAdmin(client)
        return
    # Never create the server secret here: keys hashed under a secret the server does not
    # use would never verify. The server creates it on first start.
    control = await ControlPlane.open(settings, create_secret=False, background=False)
    try:
        yield LocalAdmin(control, settings)
    finally:
        await control.aclose()


def _admin_key(data_dir: Path, settings: Any) -> str:
    if settings.admin_key is not None:
        return str(settings.admin_key.get_secret_value())
    return read_secret_file(settings.admin_key_file or data_dir / "admin.key")


def execute(ctx: click.Context, work: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``work`` on the target of ``ctx``, with a one-line message for every failure."""

    async def go() -> T:
        opened: AbstractAsyncContextManager[Admin] = _open(ctx)
        async with opened as admin:
            return await work(admin)

    try:
        return asyncio.run(go())
    except EmbedgateError as exc:
        raise click.ClickException(exc.message) from exc
    except SecretFileError as exc:
        hint = "start `embedgate serve` once, or set EMBEDGATE_SECRET_KEY as the server has it"
        raise click.ClickException(f"{exc}; {hint}") from exc
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def run(ctx: click.Context, operation: str, **args: Any) -> Any:
    result = execute(ctx, lambda admin: admin.call(operation, **args))
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    return result


def _target_flags(command: Callable[..., Any], *, env: bool, server: bool = True) -> Any:
    def envvar(name: str) -> dict[str, Any]:
        return {"envvar": name, "show_envvar": True} if env else {}

    remote = click.option(
        "--server",
        **envvar("EMBEDGATE_SERVER"),
        help="A running server's URL; default: the data dir or database.",
    )
    for option in (
        *([remote] if server else []),
        click.option("--config", type=click.Path(path_type=Path), **envvar("EMBEDGATE_CONFIG"),
                     help="YAML config file (for its plans)."),
        click.option("--data-dir", type=click.Path(path_type=Path),
                     **envvar("EMBEDGATE_DATA_DIR"),
                     help="Data directory (default ./embedgate-data)."),
    ):  # fmt: skip
        command = option(command)
    return command


def target_options(group: Callable[..., None]) -> Any:
    return click.pass_context(_target_flags(group, env=True))


def _remember(ctx: click.Context, **options: Any) -> None:
    ctx.obj = options


def _target_flags_on_command(command: Callable[..., Any]) -> Any:
    return _target_flags(command, env=False)


def _override(ctx: click.Context, **options: Any) -> None:
    """Target flags given after the subcommand win over the group's (and the environment)."""
    ctx.obj = {**ctx.obj, **{k: v for k, v in options.items() if v is not None}}


@click.group()
@target_options
def tenants(ctx: click.Context, **options: Any) -> None:
    """Create, list, show, update, delete, export and import tenants."""
    _remember(ctx, **options)


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
def create_tenant(ctx: click.Context, tenant_id: str, name: str | None, plan: str | None,
                  policy: str | None) -> None:  # fmt: skip
    run(ctx, "create_tenant", tenant_id=tenant_id, name=name, plan=plan,
        policy=_policy(policy) or {})  # fmt: skip


@tenants.command("list")
@click.pass_context
def list_tenants(ctx: click.Context) -> None:
    run(ctx, "list_tenants")


@tenants.command("show")
@click.argument("tenant_id")
@click.pass_context
def show_tenant(ctx: click.Context, tenant_id: str) -> None:
    run(ctx, "show_tenant", tenant_id=tenant_id)


@tenants.command("update")
@click.argument("tenant_id")
@click.option("--name")
@click.option("--plan")
@click.option("--status", type=click.Choice(["active", "suspended"]))
@click.option("--policy", help="Replacement policy overrides as JSON.")
@click.pass_context
def update_tenant(ctx: click.Context, tenant_id: str, name: str | None, plan: str | None,
                  status: str | None, policy: str | None) -> None:  # fmt: skip
    run(ctx, "update_tenant", tenant_id=tenant_id, name=name, plan=plan, status=status,
        policy=_policy(policy))  # fmt: skip


@tenants.command("delete")
@click.argument("tenant_id")
@click.confirmation_option(prompt="Delete this tenant and everything it owns?")
@click.pass_context
def delete_tenant(ctx: click.Context, tenant_id: str) -> None:
    run(ctx, "delete_tenant", tenant_id=tenant_id)


@click.group()
@target_options
def keys(ctx: click.Context, **options: Any) -> None:
    """Create, list, revoke and rotate a tenant's API keys."""
    _remember(ctx, **options)


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


@click.group()
@target_options
def usage(ctx: click.Context, **options: Any) -> None:
    """Export metered usage (requests, errors, inputs, tokens) per tenant and hour or day."""
    _remember(ctx, **options)


def _output_option(command: Callable[..., Any]) -> Any:
    return click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
                        help="Write to this file instead of standard output.")(command)  # fmt: skip


def _open_output(output: Path | None) -> IO[str]:
    return click.open_file(str(output) if output else "-", "w", encoding="utf-8")


@usage.command("export")
@click.option("--tenant", help="Only this tenant; default: every tenant.")
@click.option("--start", help="ISO-8601 date or date-time, UTC unless it names an offset; "
              "default: the start of this month.")  # fmt: skip
@click.option("--end", help="Same, excluded; default: now.")
@click.option("--granularity", type=click.Choice(["hour", "day"]), default="day",
              show_default=True)  # fmt: skip
@click.option("--format", "output_format", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)  # fmt: skip
@_output_option
@_target_flags_on_command
@click.pass_context
def export_usage(ctx: click.Context, /, tenant: str | None, start: str | None, end: str | None,
                 granularity: str, output_format: str, output: Path | None,
                 **target: Any) -> None:  # fmt: skip
    """Requests, errors, inputs and tokens per tenant and UTC hour or day (CSV for billing).

    Inputs and tokens count successful requests only; the range is [start, end).
    """
    _override(ctx, **target)
    query = {"tenant": tenant, "start": start, "end": end, "granularity": granularity}
    rows = execute(ctx, lambda admin: admin.call("usage", **query))
    text = (to_csv(rows, CSV_COLUMNS) if output_format == "csv"
            else json.dumps(rows, indent=2, ensure_ascii=False) + "\n")  # fmt: skip
    try:
        with _open_output(output) as out:
            out.write(text)
    except OSError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
@target_options
def audit(ctx: click.Context, **options: Any) -> None:
    """Export the audit log: admin actions and security events."""
    _remember(ctx, **options)


@audit.command("export")
@click.option("--tenant", help="Only events about this tenant.")
@click.option("--event", help="Only this event, e.g. key.created or auth.failed.")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True)  # fmt: skip
@_output_option
@_target_flags_on_command
@click.pass_context
def export_audit(ctx: click.Context, /, tenant: str | None, event: str | None, output_format: str,
                 output: Path | None, **target: Any) -> None:  # fmt: skip
    """Every matching event, newest first, one page of the log at a time."""
    _override(ctx, **target)

    async def export(admin: Admin) -> int:
        count, before = 0, None
        with _open_output(output) as out:
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


def register(main: click.Group) -> None:
    from embedgate.cli_backup import export_tenant, import_tenant

    tenants.add_command(export_tenant)
    tenants.add_command(import_tenant)
    for group in (tenants, keys, usage, audit):
        main.add_command(group)
