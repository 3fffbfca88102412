"""Where an admin command runs: on the data dir or database directly (``LocalAdmin``), or on a
running server (``--server URL``, ``RemoteAdmin``, with the admin key from the environment or
its file). Both return the JSON the admin API returns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import click
import httpx

from embedgate.cli.common import load_settings, unreachable
from embedgate.cli.reach import TargetError, admin_key, elsewhere_hint, local_data_check
from embedgate.config.settings import Settings
from embedgate.docstore.stores import open_store
from embedgate.errors import EmbedgateError
from embedgate.keyfiles import SecretFileError
from embedgate.runtime import ControlPlane
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.render import audit_json, key_json, tenant_json

ACTOR = "cli"
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
        events = await self._c.store.audit.page(
            tenant_id=tenant, event=event, before_id=before, limit=limit
        )
        return [audit_json(e) for e in events]


class RemoteAdmin:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self._http = client

    async def call(self, operation: str, **args: Any) -> Any:
        method, path, body = _ROUTES[operation](**args)
        response = await self._http.request(method, path, json=body)
        try:
            payload = response.json()
        except ValueError:
            raise TargetError(
                f"{response.url} answered HTTP {response.status_code}, not embedgate's JSON:"
                " is --server the URL of an embedgate server?"
            ) from None
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
async def open_target(ctx: click.Context) -> Any:
    options = ctx.obj
    settings = load_settings({"data_dir": options["data_dir"], "config": options["config"]})
    if options["server"]:
        headers = {"Authorization": f"Bearer {admin_key(settings)}"}
        async with httpx.AsyncClient(base_url=options["server"], headers=headers) as client:
            yield RemoteAdmin(client)
        return
    await local_data_check(settings)
    # Never create the server secret here: keys hashed under a secret the server does not
    # use would never verify. The server creates it on first start.
    control = await ControlPlane.open(settings, create_secret=False, background=False)
    try:
        yield LocalAdmin(control, settings)
    finally:
        await control.aclose()


def execute(ctx: click.Context, work: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``work`` on the target of ``ctx``, with a one-line message for every failure."""

    async def go() -> T:
        opened: AbstractAsyncContextManager[Admin] = open_target(ctx)
        async with opened as admin:
            return await work(admin)

    try:
        return asyncio.run(go())
    except EmbedgateError as exc:
        raise click.ClickException(exc.message) from exc
    except TargetError as exc:
        raise click.ClickException(str(exc)) from exc
    except SecretFileError as exc:
        hint = "set EMBEDGATE_SECRET_KEY as the server has it, or pass the server's --data-dir"
        raise click.ClickException(f"{exc}; {hint}") from exc
    except httpx.TransportError as exc:
        server = ctx.obj["server"]
        settings = load_settings({"data_dir": ctx.obj["data_dir"], "config": ctx.obj["config"]})
        hint = elsewhere_hint(settings, server)
        raise click.ClickException(unreachable(server, exc) + hint) from exc
    except (httpx.HTTPError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def run(ctx: click.Context, operation: str, **args: Any) -> Any:
    result = execute(ctx, lambda admin: admin.call(operation, **args))
    click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    return result
