"""Tenants on the SQL state store. A tenant's deletion takes its keys and console
sessions with it, in one transaction (see ``TenantStore.delete``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from embedgate.storage.records import Conflict, Tenant, TenantStatus
from embedgate.storage.schema import api_keys, console_sessions, tenants


class SqlTenants:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, tenant: Tenant) -> None:
        values = {f: getattr(tenant, f) for f in Tenant.__slots__}
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(tenants).values(values))
        except IntegrityError as exc:
            raise Conflict(f"tenant {tenant.id} already exists") from exc

    async def get(self, tenant_id: str) -> Tenant | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(select(tenants).where(tenants.c.id == tenant_id))
            row = result.first()
        return _tenant(row) if row else None

    async def page(self, *, after: str | None = None, limit: int = 100) -> list[Tenant]:
        query = select(tenants).order_by(tenants.c.id).limit(limit)
        if after is not None:
            query = query.where(tenants.c.id > after)
        async with self._engine.connect() as connection:
            return [_tenant(row) for row in await connection.execute(query)]

    async def uids(self) -> set[str]:
        async with self._engine.connect() as connection:
            return {str(uid) for uid in (await connection.execute(select(tenants.c.uid))).scalars()}

    async def count(self) -> int:
        query = select(func.count()).select_from(tenants)
        async with self._engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def update(
        self,
        tenant_id: str,
        now: datetime,
        *,
        name: str | None = None,
        plan: str | None = None,
        status: TenantStatus | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> Tenant | None:
        changes = {"name": name, "plan": plan, "status": status,
                   "policy": dict(policy) if policy is not None else None}  # fmt: skip
        values = {k: v for k, v in changes.items() if v is not None} | {"updated_at": now}
        async with self._engine.begin() as connection:
            await connection.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(values)
            )
        return await self.get(tenant_id)

    async def delete(self, tenant_id: str) -> bool:
        async with self._engine.begin() as connection:
            await connection.execute(delete(api_keys).where(api_keys.c.tenant_id == tenant_id))
            await connection.execute(
                delete(console_sessions).where(console_sessions.c.tenant_id == tenant_id)
            )
            result = await connection.execute(delete(tenants).where(tenants.c.id == tenant_id))
        return bool(result.rowcount)


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(**row._asdict())
