"""The state store interface. Every call names its tenant explicitly."""

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


class StateStore(Protocol):
    backend: str  # "sqlite" or "postgresql"

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...

    async def create_tenant(self, tenant: Tenant) -> None: ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self, *, after: str | None = None, limit: int = 100) -> list[Tenant]: ...

    async def tenant_uids(self) -> set[str]:
        """The uids of every tenant that exists (the start-up sweep keeps their data)."""
        ...

    async def count_tenants(self) -> int: ...

    async def update_tenant(
        self,
        tenant_id: str,
        now: datetime,
        *,
        name: str | None = None,
        plan: str | None = None,
        status: TenantStatus | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> Tenant | None: ...

    async def delete_tenant(self, tenant_id: str) -> bool:
        """The tenant, its keys and console sessions; its usage records stay (billing)."""
        ...

    async def add_key(self, key: ApiKey, digest: str) -> None: ...

    async def key_by_digest(self, digest: str) -> ApiKey | None: ...

    async def list_keys(self, tenant_id: str) -> list[ApiKey]: ...

    async def export_keys(self, tenant_id: str) -> list[tuple[ApiKey, str]]:
        """Every key of the tenant (revoked and expired ones too) with its digest, for a
        backup: ``add_key(key, digest)`` restores it."""
        ...

    async def get_key(self, tenant_id: str, key_id: str) -> ApiKey | None: ...

    async def revoke_key(self, tenant_id: str, key_id: str, at: datetime) -> bool: ...

    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None: ...

    async def append_audit(self, event: AuditEvent) -> None: ...

    async def list_audit(
        self,
        *,
        tenant_id: str | None = None,
        event: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]: ...

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        """All of them in one transaction: either every record is stored or none is."""
        ...

    async def usage_buckets(
        self,
        tenant_id: str | None,
        start: datetime,
        end: datetime,
        granularity: Granularity,
    ) -> list[UsageBucket]:
        """Usage in ``[start, end)`` per tenant and UTC hour or day, by tenant then time;
        every tenant when ``tenant_id`` is None. Buckets without requests are left out."""
        ...

    async def usage_totals(
        self, tenant_uid: str, start: datetime, end: datetime | None = None
    ) -> UsageTotals:
        """One tenant incarnation's usage (by uid: a re-created id starts at zero)."""
        ...

    async def delete_usage_before(self, at: datetime) -> int: ...

    async def export_usage(
        self, tenant_id: str, start: datetime, end: datetime, *, after_id: int, limit: int
    ) -> list[tuple[int, UsageRecord]]:
        """The tenant's records in ``[start, end)`` with ids above ``after_id``, by id, at
        most ``limit``: a backup reads them page by page."""
        ...

    async def delete_usage(self, tenant_id: str, start: datetime, end: datetime) -> int:
        """Remove the tenant's records in ``[start, end)``: a restore replaces that window."""
        ...

    async def add_session(self, session: ConsoleSession, digest: str) -> None:
        """Raises ``Conflict`` for a duplicate digest or an unknown tenant."""
        ...

    async def session_by_digest(self, digest: str) -> ConsoleSession | None:
        """The session stored under ``digest``, expired or not: the caller judges."""
        ...

    async def delete_session(self, digest: str) -> bool: ...

    async def delete_sessions_before(self, at: datetime) -> int:
        """Remove the sessions that expired before ``at``; how many went."""
        ...
