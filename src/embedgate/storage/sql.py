"""The state store on SQLAlchemy: SQLite in the data dir by default, PostgreSQL when
``EMBEDGATE_DATABASE_URL`` is set. One implementation; the dialects differ only in setup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    String,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from embedgate.storage.base import Granularity
from embedgate.storage.migrate import upgrade
from embedgate.storage.records import (
    ApiKey,
    AuditEvent,
    Conflict,
    Tenant,
    TenantStatus,
    UsageBucket,
    UsageRecord,
    UsageTotals,
)
from embedgate.storage.schema import (
    api_keys,
    audit_events,
    console_sessions,
    tenants,
    usage_records,
)
from embedgate.storage.sql_sessions import SqlSessions

ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
BUCKET_HOURS: dict[Granularity, int] = {"hour": 1, "day": 24}
CONNECT_TIMEOUT_S = 5  # a database host that drops packets fails requests, never hangs them


def async_url(database_url: str | None, data_dir: Path) -> URL:
    """The configured URL with an async driver, or the embedded SQLite file."""
    if not database_url:
        return make_url(f"sqlite+aiosqlite:///{data_dir.resolve() / 'embedgate.db'}")
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend not in ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite://")
    return url.set(drivername=ASYNC_DRIVERS[backend])


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    # WAL lets readers run beside the writer; FULL sync: a 2xx is on disk; busy_timeout
    # waits for the writer instead of failing; foreign keys enable ON DELETE CASCADE.
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=5000",
                   "foreign_keys=ON"):  # fmt: skip
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


class SqlStateStore(SqlSessions):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.backend = engine.dialect.name

    @classmethod
    async def open(cls, database_url: str | None, data_dir: Path) -> SqlStateStore:
        url = async_url(database_url, data_dir)
        # Pre-ping: a connection that a database restart broke is replaced, not used.
        options: dict[str, Any] = {"pool_pre_ping": True}
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        engine = create_async_engine(url, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
        return cls(engine)

    async def ping(self) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self._engine.dispose()

    # tenants

    async def create_tenant(self, tenant: Tenant) -> None:
        values = {f: getattr(tenant, f) for f in Tenant.__slots__}
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(tenants).values(values))
        except IntegrityError as exc:
            raise Conflict(f"tenant {tenant.id} already exists") from exc

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(select(tenants).where(tenants.c.id == tenant_id))
            row = result.first()
        return _tenant(row) if row else None

    async def list_tenants(self, *, after: str | None = None, limit: int = 100) -> list[Tenant]:
        query = select(tenants).order_by(tenants.c.id).limit(limit)
        if after is not None:
            query = query.where(tenants.c.id > after)
        async with self._engine.connect() as connection:
            return [_tenant(row) for row in await connection.execute(query)]

    async def tenant_uids(self) -> set[str]:
        async with self._engine.connect() as connection:
            return {str(uid) for uid in (await connection.execute(select(tenants.c.uid))).scalars()}

    async def count_tenants(self) -> int:
        query = select(func.count()).select_from(tenants)
        async with self._engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def update_tenant(
        self,
        tenant_id: str,
        now: datetime,
        *,
        name: str | None = None,
        plan: str | None = None,
        status: TenantStatus | None = None,
        policy: Mapping[str, Any] | None = None,
    ) -> Tenant | None:
        changes = {"name": name, "plan": plan, "status": status,
                   "policy": dict(policy) if policy is not None else None}  # fmt: skip
        values = {k: v for k, v in changes.items() if v is not None} | {"updated_at": now}
        async with self._engine.begin() as connection:
            await connection.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(values)
            )
        return await self.get_tenant(tenant_id)

    async def delete_tenant(self, tenant_id: str) -> bool:
        async with self._engine.begin() as connection:
            await connection.execute(delete(api_keys).where(api_keys.c.tenant_id == tenant_id))
            await connection.execute(
                delete(console_sessions).where(console_sessions.c.tenant_id == tenant_id)
            )
            result = await connection.execute(delete(tenants).where(tenants.c.id == tenant_id))
        return bool(result.rowcount)

    # keys

    async def add_key(self, key: ApiKey, digest: str) -> None:
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

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        async with self._engine.connect() as connection:
            result = await connection.execute(select(api_keys).where(api_keys.c.digest == digest))
            row = result.first()
        return _key(row) if row else None

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._engine.connect() as connection:
            return [_key(row) for row in await connection.execute(query)]

    async def export_keys(self, tenant_id: str) -> list[tuple[ApiKey, str]]:
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._engine.connect() as connection:
            return [(_key(row), row.digest) for row in await connection.execute(query)]

    async def get_key(self, tenant_id: str, key_id: str) -> ApiKey | None:
        query = select(api_keys).where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return _key(row) if row else None

    async def revoke_key(self, tenant_id: str, key_id: str, at: datetime) -> bool:
        """Revoke at ``at`` (now, or later for a rotation's grace period)."""
        query = (
            update(api_keys)
            .where(api_keys.c.tenant_id == tenant_id, api_keys.c.id == key_id)
            .values(revoked_at=at)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(query)
        return bool(result.rowcount)

    async def touch_keys(self, last_used: Mapping[str, datetime]) -> None:
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

    # audit

    async def append_audit(self, event: AuditEvent) -> None:
        values = {f: getattr(event, f) for f in AuditEvent.__slots__ if f != "id"}
        async with self._engine.begin() as connection:
            await connection.execute(insert(audit_events).values(values))

    async def list_audit(
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

    # usage

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        async with self._engine.begin() as connection:
            await connection.execute(insert(usage_records), [_usage_row(r) for r in records])

    async def usage_buckets(
        self,
        tenant_id: str | None,
        start: datetime,
        end: datetime,
        granularity: Granularity,
    ) -> list[UsageBucket]:
        hours = BUCKET_HOURS[granularity]
        # A literal, not a bound parameter: PostgreSQL must see the SELECT and GROUP BY
        # expressions as the same one.
        bucket = usage_records.c.epoch_hour // literal_column(str(hours), Integer)
        query = (
            select(usage_records.c.tenant_id, bucket, *_sums())
            .where(*_window(tenant_id, start, end))
            .group_by(usage_records.c.tenant_id, bucket)
            .order_by(usage_records.c.tenant_id, bucket)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            UsageBucket(row[0], datetime.fromtimestamp(row[1] * hours * 3600, UTC),
                        _totals(row[2:]))
            for row in rows
        ]  # fmt: skip

    async def usage_totals(
        self, tenant_uid: str, start: datetime, end: datetime | None = None
    ) -> UsageTotals:
        query = select(*_sums()).where(*_window(None, start, end),
                                       usage_records.c.tenant_uid == tenant_uid)  # fmt: skip
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one()
        return _totals(tuple(row))

    async def delete_usage_before(self, at: datetime) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(usage_records).where(usage_records.c.at < at))
        return int(result.rowcount)

    async def export_usage(
        self, tenant_id: str, start: datetime, end: datetime, *, after_id: int, limit: int
    ) -> list[tuple[int, UsageRecord]]:
        query = (
            select(usage_records)
            .where(*_window(tenant_id, start, end), usage_records.c.id > after_id)
            .order_by(usage_records.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [(row.id, _usage(row)) for row in rows]

    async def delete_usage(self, tenant_id: str, start: datetime, end: datetime) -> int:
        query = delete(usage_records).where(*_window(tenant_id, start, end))
        async with self._engine.begin() as connection:
            result = await connection.execute(query)
        return int(result.rowcount)


def _usage_row(record: UsageRecord) -> dict[str, Any]:
    values = {f: getattr(record, f) for f in UsageRecord.__slots__}
    values["tenant_uid"] = record.uid
    # Clipped to the columns: one overlong name must not make a whole batch fail forever.
    for column in usage_records.c:
        if isinstance(column.type, String) and values.get(column.name) is not None:
            values[column.name] = values[column.name][: column.type.length]
    values["epoch_hour"] = int(record.at.timestamp()) // 3600
    return values


def _sums() -> list[ColumnElement[Any]]:
    ok = usage_records.c.status < 400
    return [
        func.count(),
        func.sum(case((usage_records.c.status >= 400, 1), else_=0)),
        func.sum(case((ok, usage_records.c.inputs), else_=0)),
        func.sum(case((ok, usage_records.c.tokens), else_=0)),
    ]


def _window(
    tenant_id: str | None, start: datetime, end: datetime | None
) -> list[ColumnElement[bool]]:
    conditions = [usage_records.c.at >= start]
    if end is not None:
        conditions.append(usage_records.c.at < end)
    if tenant_id is not None:
        conditions.append(usage_records.c.tenant_id == tenant_id)
    return conditions


def _totals(values: Sequence[Any]) -> UsageTotals:
    requests, errors, inputs, tokens = (int(v or 0) for v in values)
    return UsageTotals(requests, errors, inputs, tokens)


def _usage(row: Row[Any]) -> UsageRecord:
    values = {f: getattr(row, f) for f in UsageRecord.__slots__}
    if values["tenant_uid"] == values["tenant_id"]:
        values["tenant_uid"] = None  # a legacy tenant's: the record's own convention
    return UsageRecord(**values)


def _tenant(row: Row[Any]) -> Tenant:
    return Tenant(**row._asdict())


def _key(row: Row[Any]) -> ApiKey:
    values = row._asdict()
    values.pop("digest")
    values["scopes"] = tuple(values["scopes"])
    return ApiKey(**values)
