"""/admin: tenants, their keys, usage and the audit log. Admin key only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from embedgate.api.deps import RuntimeDep, client_ip, require_admin
from embedgate.api.routing import StrictJsonRoute
from embedgate.api.schemas.admin import KeyCreate, KeyRotate, TenantCreate, TenantPatch
from embedgate.errors import invalid_request
from embedgate.tenancy.render import audit_json, key_json, tenant_json
from embedgate.tenancy.tenants import TENANT_ID
from embedgate.tenancy.usage import CSV_COLUMNS, isoformat, to_csv

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    route_class=StrictJsonRoute,
)


# Documented in the OpenAPI schema only: any other id is simply not found (404).
TenantId = Annotated[str, Path(json_schema_extra={"pattern": f"^{TENANT_ID.pattern}$"})]


@router.post("/tenants", status_code=201)
async def create_tenant(body: TenantCreate, runtime: RuntimeDep, request: Request) -> Any:
    tenant = await runtime.control.tenants.create(
        body.id, name=body.name, plan=body.plan, policy=body.policy, actor="admin",
        client_ip=client_ip(request),
    )  # fmt: skip
    return tenant_json(tenant, runtime.control.tenants.effective(tenant))


@router.get("/tenants")
async def list_tenants(
    runtime: RuntimeDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    tenants, more = await runtime.control.tenants.page(after, limit)
    data = [tenant_json(t, runtime.control.tenants.effective(t)) for t in tenants]
    return {"object": "list", "data": data, "has_more": more}


@router.get("/tenants/{tenant_id}")
async def get_tenant(tenant_id: TenantId, runtime: RuntimeDep) -> Any:
    tenant = await runtime.control.tenants.get(tenant_id)
    return tenant_json(tenant, runtime.control.tenants.effective(tenant))


@router.patch("/tenants/{tenant_id}")
async def update_tenant(
    tenant_id: TenantId, body: TenantPatch, runtime: RuntimeDep, request: Request
) -> Any:
    tenant = await runtime.control.tenants.update(
        tenant_id, actor="admin", client_ip=client_ip(request), name=body.name,
        plan=body.plan, status=body.status, policy=body.policy,
    )  # fmt: skip
    return tenant_json(tenant, runtime.control.tenants.effective(tenant))


@router.delete("/tenants/{tenant_id}")
async def delete_tenant(tenant_id: TenantId, runtime: RuntimeDep, request: Request) -> Any:
    """The tenant, its keys, and its collections and documents (files or rows)."""
    await runtime.control.tenants.get(tenant_id)  # 404 before anything is erased
    documents = await runtime.stores.get()  # 503 while there is none: nothing is erased
    await runtime.control.tenants.delete(tenant_id, actor="admin", documents=documents,
                                         client_ip=client_ip(request))  # fmt: skip
    return {"id": tenant_id, "object": "tenant", "deleted": True}


@router.post("/tenants/{tenant_id}/keys", status_code=201)
async def create_key(
    tenant_id: TenantId, body: KeyCreate, runtime: RuntimeDep, request: Request
) -> Any:
    issued = await runtime.control.key_admin.create(
        tenant_id, actor="admin", client_ip=client_ip(request), name=body.name,
        scopes=body.scopes, expires_in=body.expires_in,
    )  # fmt: skip
    return key_json(issued.record, issued)


@router.get("/tenants/{tenant_id}/keys")
async def list_keys(tenant_id: TenantId, runtime: RuntimeDep) -> Any:
    keys = await runtime.control.key_admin.listed(tenant_id)
    return {"object": "list", "data": [key_json(k) for k in keys], "has_more": False}


@router.delete("/tenants/{tenant_id}/keys/{key_id}")
async def revoke_key(
    tenant_id: TenantId, key_id: str, runtime: RuntimeDep, request: Request
) -> Any:
    await runtime.control.key_admin.revoke(
        tenant_id, key_id, actor="admin", client_ip=client_ip(request)
    )
    return {"id": key_id, "object": "api_key", "deleted": True}


@router.post("/tenants/{tenant_id}/keys/{key_id}/rotate", status_code=201)
async def rotate_key(
    tenant_id: TenantId, key_id: str, runtime: RuntimeDep, request: Request,
    body: KeyRotate | None = None,
) -> Any:  # fmt: skip
    grace = body.grace_period if body is not None else 0
    issued = await runtime.control.key_admin.rotate(
        tenant_id, key_id, actor="admin", client_ip=client_ip(request), grace_period=grace
    )
    return key_json(issued.record, issued)


@router.get("/audit")
async def list_audit(
    runtime: RuntimeDep,
    tenant: str | None = None,
    event: str | None = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,  # a row id: SQL's int64
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    events = await runtime.control.store.audit.page(
        tenant_id=tenant, event=event, before_id=before, limit=limit + 1
    )
    data = [audit_json(e) for e in events[:limit]]
    return {"object": "list", "data": data, "has_more": len(events) > limit}


@router.get("/usage")
async def usage_report(
    runtime: RuntimeDep,
    tenant: str | None = None,
    start: str | None = None,
    end: str | None = None,
    granularity: str | None = None,
    output: Annotated[str | None, Query(alias="format")] = None,
) -> Any:
    """Usage per tenant and UTC hour or day, as JSON or as CSV for billing."""
    if output not in (None, "json", "csv"):
        raise invalid_request("'format' must be 'json' or 'csv'.", "format")
    meter = runtime.control.usage
    query = meter.query(tenant=tenant, start=start, end=end, granularity=granularity)
    rows = await meter.report(query)
    if output == "csv":
        disposition = f'attachment; filename="usage-{query.start:%Y%m%d}-{query.end:%Y%m%d}.csv"'
        return Response(to_csv(rows, CSV_COLUMNS), media_type="text/csv",
                        headers={"Content-Disposition": disposition})  # fmt: skip
    return {
        "object": "list", "data": rows, "granularity": query.granularity,
        "start": isoformat(query.start), "end": isoformat(query.end), "has_more": False,
    }  # fmt: skip
