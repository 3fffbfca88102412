"""The pgvector store's tenant registry: one row per tenant uid that ever wrote, and the
mark that it was deleted, which every replica's writes check inside their transaction.

A write takes its tenant's advisory lock shared and the row ``FOR SHARE`` (inserting it
first on the uid's first write), and is refused when the row is marked deleted. A delete
takes the advisory lock exclusive, then marks the row: writes in flight commit first, later
ones wait and then see the mark. The advisory lock is what makes the delete wait its turn:
PostgreSQL queues a shared request behind a waiting exclusive one, while a row's share lock
lets new sharers in ahead of a waiting update, so a tenant writing without pause would
otherwise hold its own delete off for as long as it kept writing. So no
write of a deleted tenant lands after its delete, whichever replica's cache still admits
its key. The rows are then removed, and the row records that (``purged_at``); a crash in
between leaves the mark, and the start-up sweep removes what it marks. Nothing else is
ever swept: a uid missing from some list may be a tenant another replica just created.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from embedgate.docstore.base import TenantDeleted

# Schema version 2 (see pg_schema). Row-level security confines the app role to its
# tenant's row; not forced, so the owner's start-up sweep lists every marked one.
DDL = """
CREATE TABLE IF NOT EXISTS embedgate_search.tenant_registry (
    tenant_id text PRIMARY KEY CHECK (tenant_id <> ''),
    deleted_at timestamptz,
    purged_at timestamptz
);
ALTER TABLE embedgate_search.tenant_registry ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON embedgate_search.tenant_registry;
CREATE POLICY tenant_isolation ON embedgate_search.tenant_registry
    USING (tenant_id = current_setting('embedgate.tenant', true))
    WITH CHECK (tenant_id = current_setting('embedgate.tenant', true));
"""
GRANTS = "GRANT SELECT, INSERT, UPDATE ON embedgate_search.tenant_registry TO {role};"

# The same 64-bit key on every replica; two uids that share one only wait for each other.
WRITING = """SELECT pg_advisory_xact_lock_shared(
    hashtextextended('embedgate-tenant:' || %s, 0))"""
DELETING = """SELECT pg_advisory_xact_lock(hashtextextended('embedgate-tenant:' || %s, 0))"""
SHARE = """SELECT deleted_at FROM embedgate_search.tenant_registry WHERE tenant_id = %s
FOR SHARE"""
REGISTER = """INSERT INTO embedgate_search.tenant_registry (tenant_id) VALUES (%s)
ON CONFLICT (tenant_id) DO NOTHING"""
# An upsert: a tenant that never wrote gets its row, marked, so its first write fails too.
MARK_DELETED = """INSERT INTO embedgate_search.tenant_registry (tenant_id, deleted_at)
VALUES (%s, now()) ON CONFLICT (tenant_id) DO UPDATE
SET deleted_at = coalesce(tenant_registry.deleted_at, excluded.deleted_at)"""
MARK_PURGED = "UPDATE embedgate_search.tenant_registry SET purged_at = now() WHERE tenant_id = %s"
UNPURGED = """SELECT tenant_id FROM embedgate_search.tenant_registry
WHERE deleted_at IS NOT NULL AND purged_at IS NULL ORDER BY tenant_id"""


async def check_writable(connection: AsyncConnection[Any], tenant: str) -> None:
    """Lock the tenant's row for this transaction; ``TenantDeleted`` if it is marked."""
    await connection.execute(WRITING, [tenant])
    row = await (await connection.execute(SHARE, [tenant])).fetchone()
    if row is None:
        await connection.execute(REGISTER, [tenant])
        row = await (await connection.execute(SHARE, [tenant])).fetchone()
    if row is None or row[0] is not None:
        raise TenantDeleted()


async def mark_deleted(connection: AsyncConnection[Any], tenant: str) -> None:
    """In the caller's transaction: once writes in flight are done, the mark."""
    await connection.execute(DELETING, [tenant])
    await connection.execute(MARK_DELETED, [tenant])


async def mark_purged(connection: AsyncConnection[Any], tenant: str) -> None:
    await connection.execute(MARK_PURGED, [tenant])


async def unpurged(connection: AsyncConnection[Any]) -> list[str]:
    """Deleted tenants whose rows may remain (as the owner: every tenant's row)."""
    return [row[0] for row in await (await connection.execute(UNPURGED)).fetchall()]
