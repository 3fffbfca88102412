"""The audit log on the SQL state store: appended to, read newest first."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from embedgate.storage.records import AuditEvent
from embedgate.storage.schema import audit_events


class SqlAudit:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, event: AuditEvent) -> None:
        values = {f: getattr(event, f) for f in AuditEvent.__slots__ if f != "id"}
        async with self._engine.begin() as connection:
            await connection.execute(insert(audit_events).values(values))

    async def page(
        self,
        *,
        tenant_id: str | None = None,
        event: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(audit_events.c.tenant_id == tenant_id)
        if event is not None:
            query = query.where(audit_events.c.event == event)
        if before_id is not None:
            query = query.where(audit_events.c.id < before_id)
        async with self._engine.connect() as connection:
            return [AuditEvent(**row._asdict()) for row in await connection.execute(query)]
