"""The records a state store keeps. Keys are kept as digests only: no field holds a secret,
and usage records hold counts only: never any text a tenant sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

TenantStatus = Literal["active", "suspended"]


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    plan: str
    status: TenantStatus
    policy: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant_id: str
    name: str
    prefix: str  # shown in listings and logs, never enough to authenticate
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


SessionKind = Literal["tenant", "admin"]


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A web console login. Stored under a digest of its token: the token itself (the
    cookie) is never stored; a tenant session re-checks its key on every request, and an
    admin session holds a digest of the admin key it was opened with."""

    kind: SessionKind
    created_at: datetime
    expires_at: datetime
    tenant_id: str | None = None
    key_id: str | None = None
    key_prefix: str | None = None
    admin_digest: str | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event: str
    actor: str  # "admin", "tenant:<id>" or "system"
    at: datetime
    tenant_id: str | None = None
    key_prefix: str | None = None
    client_ip: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # assigned by the store


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One metered request: who, which model and route, how much, how it ended."""

    tenant_id: str
    key_id: str | None
    model: str | None
    route: str  # the route template, e.g. "/v1/embeddings"
    inputs: int
    tokens: int
    dimensions: int | None
    status: int  # the HTTP status answered
    latency_ms: float
    at: datetime  # aware, UTC


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Requests and errors (status >= 400) count every request; inputs and tokens count only
    successful ones (status < 400): what was delivered, and what quotas and bills charge."""

    requests: int = 0
    errors: int = 0
    inputs: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """One tenant's usage in one UTC hour or day, starting at ``start``."""

    tenant_id: str
    start: datetime
    totals: UsageTotals


class Conflict(Exception):
    """The record already exists."""
