"""GET /v1/me: who the key belongs to, its plan and effective policy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from embedgate.api.deps import CallerDep

router = APIRouter(prefix="/v1", tags=["tenant"])


@router.get("/me")
async def me(caller: CallerDep) -> dict[str, Any]:
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
        "usage": None,  # metering arrives with per-tenant limits and quotas
    }
