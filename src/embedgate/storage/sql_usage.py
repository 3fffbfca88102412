"""Usage records on the SQL state store: counts per request, summed per hour or day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    String,
    and_,
    case,
    delete,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from embedgate.storage.base import Granularity
from embedgate.storage.records import (
    RERANK_ROUTES,
    STAGE_ROUTES,
    UsageBucket,
    UsageRecord,
    UsageTotals,
)
from embedgate.storage.schema import usage_records

BUCKET_HOURS: dict[Granularity, int] = {"hour": 1, "day": 24}


class SqlUsage:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        async with self._engine.begin() as connection:
            await connection.execute(insert(usage_records), [_usage_row(r) for r in records])

    async def buckets(
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

    async def totals(
        self, tenant_uid: str, start: datetime, end: datetime | None = None
    ) -> UsageTotals:
        query = select(*_sums()).where(*_window(None, start, end),
                                       usage_records.c.tenant_uid == tenant_uid)  # fmt: skip
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).one()
        return _totals(tuple(row))

    async def delete_before(self, at: datetime) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(usage_records).where(usage_records.c.at < at))
        return int(result.rowcount)

    async def export(
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

    async def delete(self, tenant_id: str, start: datetime, end: datetime) -> int:
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
    """The sums of ``UsageTotals``, in its order (``add`` is the same over records)."""
    c = usage_records.c
    ok, stage = c.status < 400, c.route.in_(sorted(STAGE_ROUTES))
    rerank = c.route.in_(sorted(RERANK_ROUTES | STAGE_ROUTES))
    return [
        func.sum(case((stage, 0), else_=1)),
        func.sum(case((and_(c.status >= 400, ~stage), 1), else_=0)),
        func.sum(case((ok, c.inputs), else_=0)),
        func.sum(case((ok, c.tokens), else_=0)),
        func.sum(case((rerank, 1), else_=0)),
        func.sum(case((and_(ok, rerank), c.inputs), else_=0)),
        func.sum(case((and_(ok, rerank), c.tokens), else_=0)),
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
    return UsageTotals(*(int(v or 0) for v in values))


def _usage(row: Row[Any]) -> UsageRecord:
    values = {f: getattr(row, f) for f in UsageRecord.__slots__}
    if values["tenant_uid"] == values["tenant_id"]:
        values["tenant_uid"] = None  # a legacy tenant's: the record's own convention
    return UsageRecord(**values)
