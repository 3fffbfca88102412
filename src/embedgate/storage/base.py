"""The state store interface: one Protocol per record kind, composed in ``StateStore``.
Every call names its tenant explicitly.

The parts share one database. The one operation that writes more than one kind lives
with the record that owns the others: ``TenantStore.delete`` removes the tenant with its
keys and console sessions in one transaction. ``KeyStore.add`` reads the tenant's uid in
the statement that stores the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from embedgate.storage.records import (
    ApiKey,
    AuditEvent,
    ConsoleSession,
    Tenant,
    TenantStatus,
    UsageBucket,
    UsageRecord,
    UsageTotals,
)

Granularity = Literal["hour", "day"]


class TenantStore(Protocol):
    async def create(self, tenant: Tenant) -> None: ...

    async def get(self, tenant_id: str) -> Tenant | None: ...

    async def page(self, *, after: str | None = None, limit: int = 100) -> list[Tenant]:
        """Tenants by id, those after ``after``, at most ``limit``."""
        ...

    async def uids(self) -> set[str]:
        """The uids of every tenant that exists (the start-up sweep keeps their data)."""
        ...

    async def count(self) -> int: ...

    async def update(
        self,
        tenant_id: str,
        now: datetime,
        *,
        name: str | None = None,
        plan: str | None = None,
        status: TenantStatus | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> Tenant | None: ...

    async def delete(self, tenant_id: str) -> bool:
        """The tenant, its keys and console sessions, in one transaction; its usage records
        stay (billing), and so does the audit log."""
        ...


class KeyStore(Protocol):
    async def add(self, key: ApiKey, digest: str) -> None:
        """Stored under the tenant's current uid, whatever ``key.tenant_uid`` says; raises
        ``Conflict`` for a duplicate or an unknown tenant."""
        ...

    async def by_digest(self, digest: str) -> ApiKey | None: ...

    async def for_tenant(self, tenant_id: str) -> list[ApiKey]:
        """Every key of the tenant (revoked and expired ones too), oldest first."""
        ...

    async def export(self, tenant_id: str) -> list[tuple[ApiKey, str]]:
        """Every key of the tenant (revoked and expired ones too) with its digest, for a
        backup: ``add(key, digest)`` restores it."""
        ...

    async def get(self, tenant_id: str, key_id: str) -> ApiKey | None: ...

    async def revoke(self, tenant_id: str, key_id: str, at: datetime) -> bool: ...

    async def touch(self, last_used: Mapping[str, datetime]) -> None:
        """Record the keys' last-use times (key id -> time) in one statement."""
        ...


class AuditStore(Protocol):
    async def append(self, event: AuditEvent) -> None: ...

    async def page(
        self,
        *,
        tenant_id: str | None = None,
        event: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first; ``before_id`` pages back."""
        ...


class UsageStore(Protocol):
    async def add(self, records: Sequence[UsageRecord]) -> None:
        """All of them in one transaction: either every record is stored or none is."""
        ...

    async def buckets(
        self,
        tenant_id: str | None,
        start: datetime,
        end: datetime,
        granularity: Granularity,
    ) -> list[UsageBucket]:
        """Usage in ``[start, end)`` per tenant and UTC hour or day, by tenant then time;
        every tenant when ``tenant_id`` is None. Buckets without requests are left out."""
        ...

    async def totals(
        self, tenant_uid: str, start: datetime, end: datetime | None = None
    ) -> UsageTotals:
        """One tenant incarnation's usage (by uid: a re-created id starts at zero)."""
        ...

    async def delete_before(self, at: datetime) -> int: ...

    async def export(
        self, tenant_id: str, start: datetime, end: datetime, *, after_id: int, limit: int
    ) -> list[tuple[int, UsageRecord]]:
        """The tenant's records in ``[start, end)`` with ids above ``after_id``, by id, at
        most ``limit``: a backup reads them page by page."""
        ...

    async def delete(self, tenant_id: str, start: datetime, end: datetime) -> int:
        """Remove the tenant's records in ``[start, end)``: a restore replaces that window."""
        ...


class SessionStore(Protocol):
    async def add(self, session: ConsoleSession, digest: str) -> None:
        """Raises ``Conflict`` for a duplicate digest or an unknown tenant."""
        ...

    async def by_digest(self, digest: str) -> ConsoleSession | None:
        """The session stored under ``digest``, expired or not: the caller judges."""
        ...

    async def delete(self, digest: str) -> bool: ...

    async def delete_expired(self, at: datetime) -> int:
        """Remove the sessions that expired before ``at``; how many went."""
        ...


class StateStore(Protocol):
    """The database: it owns the connections, its parts share them."""

    backend: str  # "sqlite" or "postgresql"
    tenants: TenantStore
    keys: KeyStore
    audit: AuditStore
    usage: UsageStore
    sessions: SessionStore

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
