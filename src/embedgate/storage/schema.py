"""Tables of the state store. Migrations in ``migrations/`` create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(63), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("plan", String(63), nullable=False),
    Column("status", String(16), nullable=False),
    Column("policy", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Nullable only in the table definition: 0004 adds it to existing SQLite tables, which
    # cannot gain a NOT NULL column in place; every row has one (see records.Tenant).
    Column("uid", String(63)),
    Index("ix_tenants_uid", "uid", unique=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(63), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("prefix", String(100), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),  # HMAC-SHA256, hex
    Column("scopes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
    Column("tenant_uid", String(63)),
    Index("ix_api_keys_tenant", "tenant_id"),
)

# Append-only. No foreign key: the record of a deleted tenant's deletion must survive it.
audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime, nullable=False),
    Column("event", String(63), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("tenant_id", String(63)),
    Column("key_prefix", String(100)),
    Column("client_ip", String(64)),
    Column("detail", JSON, nullable=False),
    Index("ix_audit_tenant_id", "tenant_id", "id"),
    Index("ix_audit_event_id", "event", "id"),
)

# One row per metered request: counts only, never text. No foreign key, as for the audit
# log: a bill outlives the tenant, and a deleted tenant's pending records must still insert.
# ``epoch_hour`` (whole hours since 1970-01-01 UTC) lets both dialects bucket by hour or day
# with plain integer arithmetic.
usage_records = Table(
    "usage_records",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("tenant_id", String(63), nullable=False),
    Column("key_id", String(40)),
    Column("model", String(200)),
    Column("route", String(100), nullable=False),
    Column("inputs", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("dimensions", Integer),
    Column("status", Integer, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("epoch_hour", Integer, nullable=False),
    Column("tenant_uid", String(63)),  # the incarnation charged; quotas and /v1/me read it
    Index("ix_usage_tenant_at", "tenant_id", "at"),
    Index("ix_usage_uid_at", "tenant_uid", "at"),
    Index("ix_usage_at", "at"),
)

# Web console sessions, under an HMAC digest of their token (the cookie): a database dump
# opens no session. A tenant's sessions go with it.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("digest", String(64), primary_key=True),  # HMAC-SHA256 of the token, hex
    Column("kind", String(16), nullable=False),
    Column("tenant_id", String(63), ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("key_id", String(40)),
    Column("key_prefix", String(100)),
    Column("admin_digest", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_console_sessions_tenant", "tenant_id"),
    Index("ix_console_sessions_expires", "expires_at"),
)
