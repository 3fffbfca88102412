"""Web console sessions on the SQL state store, under their token's digest."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from embedgate.storage.records import Conflict, ConsoleSession
from embedgate.storage.schema import console_sessions


class SqlSessions:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, session: ConsoleSession, digest: str) -> None:
        values = {f: getattr(session, f) for f in ConsoleSession.__slots__} | {"digest": digest}
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(console_sessions).values(values))
        except IntegrityError as exc:
            raise Conflict("session could not be stored (unknown tenant or duplicate)") from exc

    async def by_digest(self, digest: str) -> ConsoleSession | None:
        query = select(console_sessions).where(console_sessions.c.digest == digest)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        values = row._asdict()
        values.pop("digest")
        return ConsoleSession(**values)

    async def delete(self, digest: str) -> bool:
        query = delete(console_sessions).where(console_sessions.c.digest == digest)
        async with self._engine.begin() as connection:
            result = await connection.execute(query)
        return bool(result.rowcount)

    async def delete_expired(self, at: datetime) -> int:
        query = delete(console_sessions).where(console_sessions.c.expires_at < at)
        async with self._engine.begin() as connection:
            result = await connection.execute(query)
        return int(result.rowcount)
