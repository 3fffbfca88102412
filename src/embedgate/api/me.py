"""GET /v1/me: who the key belongs to, its plan, effective policy and usage this month."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from embedgate.api.admission import AdmittedRoute
from embedgate.api.deps import CallerDep, RuntimeDep
from embedgate.docstore.caps import usage_json
from embedgate.tenancy.usage import UsageMeter, isoformat, month_start

router = APIRouter(prefix="/v1", tags=["tenant"], route_class=AdmittedRoute)


async def usage_this_month(meter: UsageMeter, tenant_uid: str) -> dict[str, Any]:
    """The tenant's usage in the current calendar month (UTC), requests not yet written
    included. Tokens and inputs count successful requests only. By uid: a tenant
    re-created under a deleted one's id starts at zero."""
    start = month_start(meter.now())
    totals = await meter.totals(tenant_uid, start)
    return {
        "period": f"{start:%Y-%m}", "start": isoformat(start), "requests": totals.requests,
        "tokens": totals.tokens, "inputs": totals.inputs,
        "rerank_requests": totals.rerank_requests, "rerank_inputs": totals.rerank_inputs,
        "rerank_tokens": totals.rerank_tokens,
    }  # fmt: skip


@router.get("/me")
async def me(caller: CallerDep, runtime: RuntimeDep) -> dict[str, Any]:
    return {
        "id": caller.tenant.id,
        "object": "tenant",
        "name": caller.tenant.name,
        "plan": caller.tenant.plan,
        "policy": caller.policy.stored(),
        "key": {
            "id": caller.key.id,
            "prefix": caller.key.prefix,
            "scopes": list(caller.key.scopes),
        },
        "usage": with_quota(
            await usage_this_month(runtime.control.usage, caller.tenant.uid),
            caller.policy.monthly_token_quota,
        )
        | {"storage": usage_json(await runtime.search.storage_usage(caller))},
    }


def with_quota(usage: dict[str, Any], quota: int | None) -> dict[str, Any]:
    """The plan's monthly token quota and what is left of it (null: no quota)."""
    remaining = None if quota is None else max(0, quota - usage["tokens"])
    return {**usage, "quota": quota, "quota_remaining": remaining}
