"""The records a state store keeps. Keys are kept as digests only: no field holds a secret,
and usage records hold counts only: never any text a tenant sent."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

TenantStatus = Literal["active", "suspended"]
UID_PREFIX = "tn_"  # "_" never occurs in a tenant id, so no fresh uid equals a legacy one


def new_uid() -> str:
    """A tenant's internal id: random, generated once at creation, never reused."""
    return UID_PREFIX + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Tenant:
    """``id`` is the name clients, admins and bills use, and may be reused after a delete;
    ``uid`` is this incarnation's: every per-tenant state (documents, caches, limiter and
    quota counters) is keyed by it, so a re-created id inherits nothing. Tenants that
    existed before uids have ``uid == id``."""

    id: str
    name: str
    plan: str
    status: TenantStatus
    policy: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    uid: str = field(default_factory=new_uid)


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
    # The uid of the tenant it was issued to, set by the store: a key of a deleted tenant
    # never opens a re-created tenant of the same id.
    tenant_uid: str | None = None

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
    # The tenant incarnation charged (quota, /v1/me); None: the same as ``tenant_id`` (a
    # legacy tenant). Reports by ``tenant_id`` still add up every incarnation of an id.
    tenant_uid: str | None = None

    @property
    def uid(self) -> str:
        return self.tenant_uid or self.tenant_id


# Records of reranking (docs/metering.md): the rerank API under each of its routes, and the
# rerank stage of a two-stage search. A stage's record is a second record of one request.
RERANK_ROUTES = frozenset({"/v1/rerank", "/rerank", "/v2/rerank"})
STAGE_ROUTES = frozenset({"/v1/collections/{name}/search/rerank"})


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Requests and errors (status >= 400) count every request (a stage's record is no
    request of its own); inputs and tokens count only successful ones (status < 400): what
    was delivered, and what quotas and bills charge. The ``rerank_`` counts are the part of
    them that was reranking: requests that reranked (a ``/v1/rerank`` call, or a search
    with a rerank stage), their documents and their rerank tokens."""

    requests: int = 0
    errors: int = 0
    inputs: int = 0
    tokens: int = 0
    rerank_requests: int = 0
    rerank_inputs: int = 0
    rerank_tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageBucket:
    """One tenant's usage in one UTC hour or day, starting at ``start``."""

    tenant_id: str
    start: datetime
    totals: UsageTotals


class Conflict(Exception):
    """The record already exists."""
