"""The pgvector store's transactions on data, the storage caps a write checks in its own,
and the helpers that read rows.

Every transaction switches to the non-owner role and names its tenant with
``set_config('embedgate.tenant', $1, true)``; row-level security (forced, see ``schema``)
then hides and protects every other tenant's rows, whatever the SQL says. Both settings
end with the transaction, so a pooled connection carries nothing to the next one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool

from embedgate.docstore.base import Collection, Limits, Usage, capping, check_limits
from embedgate.docstore.pgvector import queries as q
from embedgate.docstore.pgvector import registry as pg_registry
from embedgate.docstore.tenant_gate import TenantGate

Connection = AsyncConnection[Any]


class Transactions:
    def __init__(self, pool: AsyncConnectionPool[Connection], role: str,
                 gate: TenantGate) -> None:  # fmt: skip
        self._pool = pool
        self._role = role
        self._gate = gate  # pool connections a tenant may hold

    @asynccontextmanager
    async def tenant(self, tenant: str) -> AsyncIterator[Connection]:
        """One transaction as the non-owner role, confined to ``tenant`` by the database,
        on a connection taken once the tenant is within its share of the pool."""
        if not tenant:
            raise ValueError("a tenant id is required")
        async with (
            self._gate.hold(tenant), self._pool.connection() as connection,
            connection.transaction(),
        ):  # fmt: skip
            await connection.execute(q.BEGIN, [self._role, tenant])
            yield connection

    @asynccontextmanager
    async def writer(self, tenant: str) -> AsyncIterator[Connection]:
        """``tenant`` for writes: refused (``TenantDeleted``) once the tenant's delete has
        begun, on whichever replica; see registry.py."""
        async with self.tenant(tenant) as connection:
            await pg_registry.check_writable(connection, tenant)
            yield connection


async def lock_capped(connection: Connection, tenant: str, limits: Limits | None) -> None:
    """Before a capped write reads anything: one capped writer per tenant at a time."""
    if capping(limits) is not None:
        await connection.execute(q.CAPPED_WRITE, [tenant])


async def check_caps(connection: Connection, tenant: str, limits: Limits | None) -> None:
    """After the write, in its transaction: over a cap, it raises and so rolls back."""
    if (capped := capping(limits)) is not None:
        with_bytes = capped.stored_bytes is not None
        check_limits(capped, await usage(connection, tenant, with_bytes=with_bytes))


async def usage(connection: Connection, tenant: str, *, with_bytes: bool) -> Usage:
    collections, documents, collection_bytes = await one(connection, q.USAGE, [tenant])
    document_bytes = 0
    if with_bytes:
        (document_bytes,) = await one(connection, q.DOCUMENT_BYTES, [tenant])
    return Usage(int(collections), int(documents),
                 int(collection_bytes) + int(document_bytes) if with_bytes else 0)  # fmt: skip


async def one(connection: Connection, query: str, params: Sequence[Any]) -> Any:
    return await (await connection.execute(query, params)).fetchone()


async def rows(connection: Connection, query: sql.Composed, params: dict[str, Any]) -> list[Any]:
    return await (await connection.execute(query, params)).fetchall()


def to_collection(row: Sequence[Any]) -> Collection:
    name, model, dimensions, metadata, created_at, count = row
    return Collection(name, model, dimensions, metadata, created_at.astimezone(UTC), count)
