"""Tenants: create, read, change, delete (with everything they own), each one audited.

A delete removes the tenant's documents (by its uid: the store then refuses every later
write of that uid, on every replica), then the tenant with its keys and sessions, then
tells the listeners (``on_delete``: the auth, key and embedding caches of this process),
so its keys stop working here at once. Its usage records stay, under the old uid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from embedgate.errors import EmbedgateError, invalid_request
from embedgate.storage.base import TenantStore
from embedgate.storage.records import Conflict, Tenant, TenantStatus
from embedgate.tenancy.audit import AuditLog
from embedgate.tenancy.policy import Policy, effective_policy

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_PLAN = "default"


class TenantData(Protocol):
    """Where a tenant's documents live (a ``DocumentStore``), keyed by tenant uid."""

    async def delete_tenant(self, tenant: str) -> None: ...


def tenant_not_found() -> EmbedgateError:
    return EmbedgateError(404, "No such tenant.", code="not_found")


class TenantService:
    def __init__(
        self,
        store: TenantStore,
        audit: AuditLog,
        plans: Mapping[str, Any],
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._audit = audit
        self._plans = plans
        self._clock = clock
        self._on_delete: list[Callable[[Tenant], object]] = []

    def on_delete(self, listener: Callable[[Tenant], object]) -> None:
        """Call ``listener`` with each tenant this service deletes, right after."""
        self._on_delete.append(listener)

    def effective(self, tenant: Tenant) -> Policy:
        """The policy enforced for ``tenant``: its plan's defaults under its own fields."""
        return effective_policy(self._plans, tenant)

    async def create(
        self, tenant_id: str, *, name: str | None, plan: str | None, policy: Policy, actor: str,
        client_ip: str | None = None,
    ) -> Tenant:  # fmt: skip
        if not TENANT_ID.fullmatch(tenant_id):
            raise invalid_request(
                "Tenant ids are 1 to 63 characters: lowercase letters, digits and '-', "
                "starting with a letter or digit.",
                "id",
            )
        now = self._clock()
        tenant = Tenant(
            id=tenant_id, name=name or tenant_id, plan=self._check_plan(plan or DEFAULT_PLAN),
            status="active", policy=policy.stored(), created_at=now, updated_at=now,
        )  # fmt: skip
        try:
            await self._store.create(tenant)
        except Conflict:
            raise EmbedgateError(
                409, f"Tenant {tenant_id} already exists.", param="id", code="tenant_exists"
            ) from None
        await self._audit.record("tenant.created", actor=actor, tenant_id=tenant_id,
                                 client_ip=client_ip, plan=tenant.plan)  # fmt: skip
        return tenant

    async def get(self, tenant_id: str) -> Tenant:
        tenant = await self._store.get(tenant_id)
        if tenant is None:
            raise tenant_not_found()
        return tenant

    async def page(self, after: str | None, limit: int) -> tuple[list[Tenant], bool]:
        rows = await self._store.page(after=after, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def update(
        self, tenant_id: str, *, actor: str, client_ip: str | None = None,
        name: str | None = None, plan: str | None = None, status: TenantStatus | None = None,
        policy: Policy | None = None,
    ) -> Tenant:  # fmt: skip
        updated = await self._store.update(
            tenant_id, self._clock(), name=name,
            plan=self._check_plan(plan) if plan is not None else None, status=status,
            policy=policy.stored() if policy is not None else None,
        )  # fmt: skip
        if updated is None:
            raise tenant_not_found()
        changed = sorted(k for k, v in {"name": name, "plan": plan, "status": status,
                                        "policy": policy}.items() if v is not None)  # fmt: skip
        await self._audit.record("tenant.updated", actor=actor, tenant_id=tenant_id,
                                 client_ip=client_ip, changed=changed)  # fmt: skip
        return updated

    async def delete(
        self, tenant_id: str, *, actor: str, documents: TenantData | None,
        client_ip: str | None = None,
    ) -> None:  # fmt: skip
        """``documents`` None: the tenant's documents are left to the start-up sweep (only a
        server without a document store passes None)."""
        tenant = await self.get(tenant_id)
        if documents is not None:  # first: should the rest fail, nothing is left unmarked
            await documents.delete_tenant(tenant.uid)
        if not await self._store.delete(tenant_id):
            raise tenant_not_found()
        for listener in self._on_delete:
            listener(tenant)
        await self._audit.record("tenant.deleted", actor=actor, tenant_id=tenant_id,
                                 client_ip=client_ip)  # fmt: skip

    def _check_plan(self, plan: str) -> str:
        if self._plans and plan not in self._plans:
            known = ", ".join(sorted(self._plans))
            raise invalid_request(f"Unknown plan {plan!r}; the plans are: {known}.", "plan")
        return plan
