"""The usage meter: in memory on the hot path, in the database a moment later, never lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from embedgate.errors import EmbedgateError
from embedgate.runtime import ControlPlane
from embedgate.storage.base import UsageStore
from embedgate.storage.records import UsageRecord, UsageTotals
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.usage import UsageMeter, UsageQuery, month_start, to_csv
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

NO_RERANK = {"rerank_requests": 0, "rerank_inputs": 0, "rerank_tokens": 0}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def usage(tenant_id: str = "a", *, at: datetime = NOW, status: int = 200, tokens: int = 10,
          inputs: int = 2) -> UsageRecord:  # fmt: skip
    return UsageRecord(tenant_id, "key_1", "all-minilm-l6-v2", "/v1/embeddings", inputs, tokens,
                       None, status, 3.5, at)  # fmt: skip


class FlakyStore:
    """The real usage store behind a switch that makes writes fail or wait."""

    def __init__(self, store: UsageStore) -> None:
        self.store = store
        self.down = False
        self.gate: asyncio.Event | None = None
        self.writes: list[int] = []

    async def add(self, records: Sequence[UsageRecord]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ConnectionError("database restarting")
        self.writes.append(len(records))
        await self.store.add(records)

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStateStore]:
    opened = await SqlStateStore.open(None, tmp_path)
    yield opened
    await opened.aclose()


@pytest.fixture
def flaky(store: SqlStateStore) -> FlakyStore:
    return FlakyStore(store.usage)


def meter_on(store: object, clock: Clock | None = None, **options: int) -> UsageMeter:
    return UsageMeter(store, clock or Clock(), 400, **options)  # type: ignore[arg-type]


async def test_records_wait_in_memory_and_are_counted_before_and_after_the_flush(
    store: SqlStateStore, flaky: FlakyStore
) -> None:
    meter = meter_on(flaky)
    for _ in range(3):
        meter.record(usage())
    meter.record(usage("b"))
    meter.record(usage(status=500, tokens=0))
    assert flaky.writes == []  # recording never touches the database
    assert await store.usage.totals("a", NOW) == UsageTotals()
    expected = UsageTotals(requests=4, errors=1, inputs=6, tokens=30)
    assert await meter.totals("a", NOW) == expected
    assert await meter.flush() == 5
    assert flaky.writes == [5]  # one bulk write
    assert await meter.flush() == 0
    assert await meter.totals("a", NOW) == expected  # not counted twice
    assert await store.usage.totals("a", NOW) == expected


async def test_totals_respect_the_time_window(flaky: FlakyStore) -> None:
    meter = meter_on(flaky)
    meter.record(usage(at=NOW - timedelta(days=40)))
    await meter.flush()
    meter.record(usage(at=NOW - timedelta(days=40)))
    meter.record(usage(at=NOW + timedelta(hours=2), tokens=5))
    assert await meter.tokens_since("a", NOW) == 5
    assert await meter.totals("a", NOW - timedelta(days=41), NOW) == UsageTotals(2, 0, 4, 20)


async def test_quota_tokens_count_successful_requests_only(flaky: FlakyStore) -> None:
    meter = meter_on(flaky)
    meter.record(usage(tokens=100))
    await meter.flush()
    meter.record(usage(tokens=7, status=429))
    meter.record(usage(tokens=3))
    meter.record(usage("b", tokens=1000))
    assert await meter.tokens_since("a", month_start(NOW)) == 103


async def test_a_failed_flush_keeps_the_records_for_the_next_round(flaky: FlakyStore) -> None:
    meter = meter_on(flaky)
    meter.record(usage())
    flaky.down = True
    with pytest.raises(ConnectionError):
        await meter.flush()
    meter.record(usage())
    assert meter.pending == 2
    assert await meter.tokens_since("a", NOW) == 20
    flaky.down = False
    assert await meter.flush() == 2
    assert meter.pending == 0
    assert await flaky.store.totals("a", NOW) == UsageTotals(2, 0, 4, 20)


async def test_records_made_during_a_flush_stay_for_the_next_one(flaky: FlakyStore) -> None:
    meter = meter_on(flaky)
    meter.record(usage())
    flaky.gate = asyncio.Event()
    flushing = asyncio.create_task(meter.flush())
    await asyncio.sleep(0.01)
    meter.record(usage(tokens=1))  # the hot path does not wait for the write
    reading = asyncio.create_task(meter.totals("a", NOW))
    await asyncio.sleep(0.01)
    assert not reading.done()  # a read waits for the write in flight, so nothing counts twice
    flaky.gate.set()
    assert await flushing == 1
    assert (await reading).tokens == 11
    assert meter.pending == 1
    assert await meter.flush() == 1
    assert (await meter.totals("a", NOW)).tokens == 11


async def test_the_buffer_is_bounded_and_says_when_it_drops(
    flaky: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    meter = meter_on(flaky, max_pending=3)
    flaky.down = True
    with caplog.at_level(logging.WARNING, logger="embedgate.usage"):
        for _ in range(5):
            meter.record(usage())
        assert meter.pending == 3
        assert len(caplog.records) == 1  # one warning, not one per request
        flaky.down = False
        assert await meter.flush() == 3
    assert "2 usage records were dropped" in caplog.records[-1].getMessage()


def test_naive_times_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match="aware"):
        meter_on(object()).record(usage(at=NOW.replace(tzinfo=None)))


async def test_prune_deletes_what_is_past_retention(flaky: FlakyStore) -> None:
    clock = Clock()
    meter = meter_on(flaky, clock)
    meter.record(usage(at=NOW - timedelta(days=401)))
    meter.record(usage(at=NOW - timedelta(days=399)))
    await meter.flush()
    assert await meter.prune() == 1
    clock.now = NOW + timedelta(days=2)
    assert await meter.prune() == 1
    assert await meter.totals("a", NOW - timedelta(days=1000)) == UsageTotals()


async def test_reports_flush_first_and_bucket_by_day(flaky: FlakyStore) -> None:
    meter = meter_on(flaky)
    meter.record(usage(at=NOW - timedelta(days=1)))
    meter.record(usage("b", at=NOW - timedelta(minutes=1)))
    rows = await meter.report(meter.query(start="2026-11-01"))
    assert rows == [
        {"tenant": "a", "start": "2026-11-20T00:00:00Z", "end": "2026-11-21T00:00:00Z",
         "requests": 1, "errors": 0, "inputs": 2, "tokens": 10, **NO_RERANK},
        {"tenant": "b", "start": "2026-11-21T00:00:00Z", "end": "2026-11-22T00:00:00Z",
         "requests": 1, "errors": 0, "inputs": 2, "tokens": 10, **NO_RERANK},
    ]  # fmt: skip
    assert meter.pending == 0


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW, datetime(2026, 11, 1, tzinfo=UTC)),
        (datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
        # 00:30 on Dec 1 in UTC+2 is still November in UTC
        (datetime.fromisoformat("2026-12-01T00:30:00+02:00"), datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_month_start_is_the_first_instant_of_the_utc_month(
    now: datetime, expected: datetime
) -> None:
    assert month_start(now) == expected
    assert month_start(now).tzinfo == UTC


def test_queries_default_to_this_month_by_day() -> None:
    query = UsageQuery.parse(NOW)
    assert query == UsageQuery(None, datetime(2026, 11, 1, tzinfo=UTC), NOW, "day")
    parsed = UsageQuery.parse(NOW, tenant="a", start="2026-11-20T10:00:00+02:00",
                              end="2026-11-21", granularity="hour")  # fmt: skip
    assert parsed == UsageQuery("a", datetime(2026, 11, 20, 8, tzinfo=UTC),
                                datetime(2026, 11, 21, tzinfo=UTC), "hour")  # fmt: skip
    assert UsageQuery.parse(NOW, start="2026-11-20T10:00:00Z").start.hour == 10
    assert UsageQuery.parse(NOW, start="2026-11-20T10:00:00").start.tzinfo == UTC


@pytest.mark.parametrize(
    ("strings", "param"),
    [
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01"}, "end"),
        ({"start": "2026-11-21", "end": "2026-11-20"}, "start"),
        ({"start": "2026-11-21", "end": "2026-11-21"}, "start"),
        ({"granularity": "week"}, "granularity"),
    ],
)
def test_bad_queries_are_400s_naming_the_parameter(strings: dict[str, str], param: str) -> None:
    with pytest.raises(EmbedgateError) as caught:
        UsageQuery.parse(NOW, **strings)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_csv_has_a_header_and_defuses_formulas() -> None:
    rows = [{"a": "=HYPERLINK(1)", "b": {"k": [1]}}, {"a": None, "b": 3}]
    assert to_csv(rows, ["a", "b"]) == 'a,b\r\n\'=HYPERLINK(1),"{""k"":[1]}"\r\n,3\r\n'
    assert to_csv(rows[1:], ["a", "b"], header=False) == ",3\r\n"


async def test_the_control_plane_writes_usage_every_second_and_on_close(tmp_path: Path) -> None:
    control = await ControlPlane.open(make_settings(tmp_path))
    now = datetime.now(UTC)
    control.usage.record(usage(at=now))
    for _ in range(50):
        await asyncio.sleep(0.1)
        if control.usage.pending == 0:
            break
    assert control.usage.pending == 0
    assert (await control.store.usage.totals("a", now)).requests == 1
    control.usage.record(usage(at=now))
    await control.aclose()
    store = await SqlStateStore.open(None, tmp_path)
    assert (await store.usage.totals("a", now)).requests == 2
    await store.aclose()
