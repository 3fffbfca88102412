"""API keys (digests only) on the SQL state store."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from embedgate.storage.records import ApiKey, Conflict
from embedgate.storage.schema import api_keys, tenants


class SqlKeys:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, key: ApiKey, digest: str) -> None:
        # The key belongs to the tenant's current incarnation, whatever the record says.
        uid = select(tenants.c.uid).where(tenants.c.id == key.tenant_id).scalar_subquery()
        values = {f: getattr(key, f) for f in ApiKey.__slots__} | {
            "digest": digest, "scopes": list(key.scopes), "tenant_uid": uid,
        }  # fmt: skip
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(api_keys).values(values))
        except IntegrityError as exc:
            raise Conflict("key could not be stored (unknown tenant or duplicate)") from exc

    async def by_digest(self, digest: str) -> ApiKey | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(select(api_keys).where(api_keys.c.digest == digest))
            row = result.first()
        return _key(row) if row else None

    async def for_tenant(self, tenant_id: str) -> list[ApiKey]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._engine.connect() as connection:
            return [_key(row) for row in await connection.execute(query)]

    async def export(self, tenant_id: str) -> list[tuple[ApiKey, str]]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._engine.connect() as connection:
            return [(_key(row), row.digest) for row in await connection.execute(query)]

    async def get(self, tenant_id: str, key_id: str) -> ApiKey | None:
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return _key(row) if row else None

    async def revoke(self, tenant_id: str, key_id: str, at: datetime) -> bool:
        """Revoke at ``at`` (now, or later for a rotation's grace period)."""
        query = (
            update(api_keys)
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
            .values(revoked_at=at)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(query)
        return bool(result.rowcount)

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        if not last_used:
            return
        query = (
            update(api_keys)
            .where(api_keys.c.id == bindparam("key_id"))
            .values(last_used_at=bindparam("used"))
        )
        rows = [{"key_id": key_id, "used": at} for key_id, at in last_used.items()]
        async with self._engine.begin() as connection:
            await connection.execute(query, rows)


def _key(row: Row[Any]) -> ApiKey:
    values = row._asdict()
    values.pop("digest")
    values["scopes"] = tuple(values["scopes"])
    return ApiKey(**values)
