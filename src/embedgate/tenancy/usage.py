"""Usage metering: every authenticated request leaves one record of counts (never text).

``record`` is on the hot path: it appends to memory and returns. A background task writes
the buffer with ``flush`` (one bulk insert a second); when the database is away the records
wait for the next round, up to ``MAX_PENDING`` of them. Reads add the records not yet
written, so a tenant's totals never lag behind its requests on this replica.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from embedgate.errors import invalid_request
from embedgate.storage.base import Granularity, UsageStore
from embedgate.storage.records import (
    RERANK_ROUTES,
    STAGE_ROUTES,
    UsageBucket,
    UsageRecord,
    UsageTotals,
)

log = logging.getLogger("embedgate.usage")

MAX_PENDING = 100_000
GRANULARITIES: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
CSV_COLUMNS = ("tenant", "start", "end", "requests", "errors", "inputs", "tokens",
               "rerank_requests", "rerank_inputs", "rerank_tokens")  # fmt: skip


def month_start(now: datetime) -> datetime:
    """The first instant of ``now``'s calendar month, in UTC."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def isoformat(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


class UsageMeter:
    def __init__(
        self,
        store: UsageStore,
        clock: Callable[[], datetime],
        retention_days: int,
        *,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._store = store
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._dropped = 0
        # One flush at a time, and no read between a flush's commit and its removal of the
        # records it wrote: reads would count them twice.
        self._lock = asyncio.Lock()

    def now(self) -> datetime:
        return self._clock()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, rec: UsageRecord) -> None:
        """Meter one request: in memory only, never waiting on the database."""
        if rec.at.tzinfo is None:  # fail at the caller, not later in a whole batch
            raise ValueError("usage records need an aware UTC time")
        if len(self._pending) >= self._max_pending:
            self._dropped += 1
            if self._dropped == 1:
                log.warning("usage buffer full (%d records): dropping usage records until "
                            "the database takes them", self._max_pending)  # fmt: skip
            return
        self._pending.append(rec)

    async def flush(self) -> int:
        """Write the pending records in one insert; how many. On failure they stay pending
        (and the error is raised) for the next round."""
        async with self._lock:
            batch = self._pending[:]
            if not batch:
                return 0
            await self._store.add(batch)
            del self._pending[: len(batch)]  # records appended meanwhile stay
        if self._dropped:
            log.warning("%d usage records were dropped while the buffer was full", self._dropped)
            self._dropped = 0
        return len(batch)

    async def totals(
        self, tenant_uid: str, start: datetime, end: datetime | None = None
    ) -> UsageTotals:
        """One tenant incarnation's usage (by uid) in ``[start, end)`` (``end`` None:
        everything since ``start``), counting records not yet written."""
        async with self._lock:
            stored = await self._store.totals(tenant_uid, start, end)
            waiting = [r for r in self._pending if r.uid == tenant_uid
                       and r.at >= start and (end is None or r.at < end)]  # fmt: skip
        return add(stored, waiting)

    async def tokens_since(self, tenant_uid: str, start: datetime) -> int:
        """Tokens of the incarnation's successful requests since ``start`` (for quotas)."""
        return (await self.totals(tenant_uid, start)).tokens

    def query(
        self,
        *,
        tenant: str | None = None,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
    ) -> UsageQuery:
        """A report's parameters from strings (default: this month so far, by day)."""
        return UsageQuery.parse(self._clock(), tenant=tenant, start=start, end=end,
                                granularity=granularity)  # fmt: skip

    async def report(self, query: UsageQuery) -> list[dict[str, Any]]:
        """Usage per tenant and hour or day, as ``bucket_json`` rows. The buffer is written
        first so that a request that was just answered is in it."""
        await self.flush()
        buckets = await self._store.buckets(
            query.tenant_id, query.start, query.end, query.granularity
        )
        return [bucket_json(b, query.granularity) for b in buckets]

    async def prune(self) -> int:
        """Delete records older than the retention period; how many."""
        deleted = await self._store.delete_before(self._clock() - self._retention)
        if deleted:
            log.info("deleted %d usage records past retention", deleted)
        return deleted


def add(totals: UsageTotals, records: Iterable[UsageRecord]) -> UsageTotals:
    counts = {name: getattr(totals, name) for name in UsageTotals.__slots__}
    for rec in records:
        stage, ok = rec.route in STAGE_ROUTES, rec.status < 400
        if not stage:  # a stage's record is part of its request's
            counts["requests"] += 1
            counts["errors"] += not ok
        if ok:
            counts["inputs"] += rec.inputs
            counts["tokens"] += rec.tokens
        if stage or rec.route in RERANK_ROUTES:
            counts["rerank_requests"] += 1
            if ok:
                counts["rerank_inputs"] += rec.inputs
                counts["rerank_tokens"] += rec.tokens
    return UsageTotals(**counts)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """A validated usage report request."""

    tenant_id: str | None
    start: datetime
    end: datetime
    granularity: Granularity

    @classmethod
    def parse(
        cls,
        now: datetime,
        *,
        tenant: str | None = None,
        start: str | None = None,
        end: str | None = None,
        granularity: str | None = None,
    ) -> UsageQuery:
        """From the strings of a query string or the command line; 400 when they are wrong."""
        begin = parse_time(start, "start") if start else month_start(now)
        until = parse_time(end, "end") if end else now
        if begin >= until:
            raise invalid_request("'start' must be before 'end'.", "start")
        unit = granularity or "day"
        if unit not in GRANULARITIES:
            raise invalid_request("'granularity' must be 'hour' or 'day'.", "granularity")
        return cls(tenant or None, begin, until, "hour" if unit == "hour" else "day")


def parse_time(value: str, param: str) -> datetime:
    """An ISO-8601 date (its midnight, UTC) or date-time (UTC when it names no offset)."""
    try:
        parsed = datetime.fromisoformat(value)  # a date alone reads as its midnight
    except ValueError:
        raise invalid_request(
            f"'{param}' must be an ISO-8601 date or date-time, e.g. 2026-11-01 or "
            "2026-11-01T12:00:00Z.",
            param,
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def bucket_json(bucket: UsageBucket, granularity: Granularity) -> dict[str, Any]:
    totals = bucket.totals
    return {
        "tenant": bucket.tenant_id, "start": isoformat(bucket.start),
        "end": isoformat(bucket.start + GRANULARITIES[granularity]),
        "requests": totals.requests, "errors": totals.errors, "inputs": totals.inputs,
        "tokens": totals.tokens, "rerank_requests": totals.rerank_requests,
        "rerank_inputs": totals.rerank_inputs, "rerank_tokens": totals.rerank_tokens,
    }  # fmt: skip


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, header: bool = True) -> str:
    """Rows as CSV (RFC 4180), after a header row. A cell that a spreadsheet would run as a
    formula gets a leading apostrophe; lists and objects are written as JSON."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
