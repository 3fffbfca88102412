"""An HNSW index build that crashes PostgreSQL (a pgvector built with AVX-512 on a CPU
without it) is backed off: 503 ``vector_index_unavailable`` at once, no second crash until
the backoff is over, no half-created collection, and the build retried after it.

The crash is real: an event trigger makes ``CREATE INDEX ... USING hnsw`` sleep, and the
test sends the sleeping backend SIGILL, as the CPU does; the postmaster then terminates
every connection and restarts, exactly as on the AMD EPYC of issue 13.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from embedgate.docstore.base import Collection
from embedgate.docstore.pgvector.store import PgVectorStore
from embedgate.errors import EmbedgateError
from tests.conftest import ADMIN_KEY, issue_key
from tests.faults.helpers import FakeEngine, PrivatePostgres, engine_config, error_code
from tests.helpers import start_server

TRIGGER = """
CREATE FUNCTION public.hnsw_build_sleeps() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_query() ILIKE '%USING hnsw%' THEN PERFORM pg_sleep(60); END IF;
END $$;
CREATE EVENT TRIGGER hnsw_build_sleeps ON ddl_command_start WHEN TAG IN ('CREATE INDEX')
    EXECUTE FUNCTION public.hnsw_build_sleeps();
"""
SLEEPING_BUILD = """SELECT pid FROM pg_stat_activity
    WHERE query ILIKE 'CREATE INDEX%USING hnsw%' AND wait_event = 'PgSleep'"""


class IndexCrasher:
    """While armed, every HNSW index build on ``url`` dies of SIGILL; ``kills`` counts
    them, i.e. the builds that were tried."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IndexCrasher:
        with psycopg.connect(self._url, autocommit=True) as admin:
            admin.execute(TRIGGER)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.disarm()

    def disarm(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        with _connect(self._url) as admin:
            admin.execute("DROP EVENT TRIGGER IF EXISTS hnsw_build_sleeps")

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psycopg.OperationalError), _connect(self._url) as watcher:
                while not self._stop.is_set():
                    for (pid,) in watcher.execute(SLEEPING_BUILD).fetchall():
                        os.kill(pid, signal.SIGILL)  # the postmaster crash-restarts
                        self.kills += 1
                    time.sleep(0.02)
            time.sleep(0.1)


def _connect(url: str, timeout_s: float = 30.0) -> psycopg.Connection[Any]:
    """A connection as soon as the server accepts one again (after a crash restart)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=2)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _index_valid(url: str, dimensions: int) -> bool | None:
    with _connect(url) as admin:
        row = admin.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
            [f"embedgate_search.documents_hnsw_{dimensions}"],
        ).fetchone()
    return None if row is None else bool(row[0])


def _collection(name: str, dimensions: int) -> Collection:
    return Collection(name, "fake", dimensions, {}, datetime.now(UTC))


def _refused(error: EmbedgateError) -> int:
    """The Retry-After of a vector_index_unavailable 503."""
    assert (error.status, error.code) == (503, "vector_index_unavailable"), error.message
    assert "crashed the database server" in error.message
    assert "AVX-512" in error.message
    assert "docs/pgvector.md" in error.message
    return int(error.headers["Retry-After"])


@pytest.mark.anyio
async def test_the_store_backs_off_a_build_that_crashed_the_server(
    postgres: PrivatePostgres, caplog: pytest.LogCaptureFixture
) -> None:
    store = await PgVectorStore.open(postgres.url, index_retry_s=2.0)
    try:
        await store.create_collection("t", _collection("indexed", 16))  # built before
        with IndexCrasher(postgres.url) as crasher:
            caplog.set_level(logging.ERROR, "embedgate.docstore.pgvector.index")
            with pytest.raises(EmbedgateError) as first:
                await store.create_collection("t", _collection("new", 8))
            assert crasher.kills == 1
            assert 1 <= _refused(first.value) <= 2
            assert len([r for r in caplog.records if "crashed the database" in r.message]) == 1
            started = time.monotonic()
            for _ in range(5):  # within the backoff: refused, no build, no crash
                with pytest.raises(EmbedgateError) as again:
                    await store.create_collection("t", _collection("new", 8))
                _refused(again.value)
            assert time.monotonic() - started < 2.0
            assert crasher.kills == 1
            [state] = store.index_health()["index_backoff"]
            assert state["dimensions"] == 8
            assert state["crashes"] == 1
            assert 0 <= state["retry_in_s"] <= 2
            # Other dimensions are not held up: an indexed one, and one with no index.
            await _eventually(store.create_collection, "t", _collection("also", 16))
            await store.create_collection("t", _collection("huge", 4096))
            assert {c.name for c in await store.list_collections("t")} == {
                "indexed",
                "also",
                "huge",
            }  # nothing of "new"

            await _sleep_until_retry(store)
            with pytest.raises(EmbedgateError) as second:
                await store.create_collection("t", _collection("new", 8))
            assert crasher.kills == 2  # retried once the backoff was over ...
            assert 3 <= _refused(second.value) <= 4  # ... and backed off twice as long
            assert store.index_health()["index_backoff"][0]["crashes"] == 2

        await _sleep_until_retry(store)
        await _eventually(store.create_collection, "t", _collection("new", 8))
        assert crasher.kills == 2
        assert _index_valid(postgres.url, 8) is True
        assert store.index_health() == {}
    finally:
        await store.aclose()


async def _sleep_until_retry(store: PgVectorStore) -> None:
    for state in store.index_health().get("index_backoff", []):
        await asyncio.sleep(state["retry_in_s"] + 0.2)


async def _eventually(call: Any, *args: Any) -> None:
    """``call`` once the database is back from its crash restart (database_unavailable
    until then; a second later than the pool notices at worst)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            await call(*args)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


RETRY_S = 8  # long enough for the requests below on a loaded machine
ENV = {
    "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
    "EMBEDGATE_SECRET_KEY": "faults-secret-" + "x" * 32,
    "EMBEDGATE_WARMUP": "false",
    "EMBEDGATE_VECTOR_INDEX_RETRY_S": str(RETRY_S),
}


@pytest.mark.slow
def test_collections_answer_503_and_do_not_crash_loop_the_database(
    tmp_path: Path, postgres: PrivatePostgres, engine: FakeEngine
) -> None:
    config = engine_config(tmp_path / "embedgate.yaml", engine.url)
    env = {**ENV, "EMBEDGATE_VECTOR_URL": postgres.url, "EMBEDGATE_CONFIG": str(config)}
    with start_server(tmp_path / "data", env=env) as server, IndexCrasher(postgres.url) as crasher:
        base, tenant = server.url, {"Authorization": f"Bearer {issue_key(server.url)}"}

        def create(name: str) -> httpx.Response:
            return httpx.post(f"{base}/v1/collections", json={"name": name}, headers=tenant,
                              timeout=30)  # fmt: skip

        first = create("kb")
        assert first.status_code == 503, first.text
        assert error_code(first) == "vector_index_unavailable"
        message = first.json()["error"]["message"]
        assert "crashed the database server" in message
        assert "AVX-512" in message
        assert 1 <= int(first.headers["Retry-After"]) <= RETRY_S
        assert crasher.kills == 1

        started = time.monotonic()
        during = [create(f"kb{n}") for n in range(5)]
        assert time.monotonic() - started < RETRY_S  # at once, not a build each
        assert [(r.status_code, error_code(r)) for r in during] == [
            (503, "vector_index_unavailable")
        ] * 5
        assert crasher.kills == 1  # the database was not crashed again

        listed = httpx.get(f"{base}/v1/collections", headers=tenant, timeout=30)
        assert listed.status_code == 200
        assert listed.json()["data"] == []
        health = httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        [state] = health.json()["search"]["index_backoff"]
        assert state["dimensions"] == FakeEngine.dimensions
        assert state["crashes"] == 1
        log = server.log()
        assert log.count("crashed the database server") == 1, log[-3000:]

        time.sleep(state["retry_in_s"] + 0.3)
        second = create("kb")
        assert (second.status_code, error_code(second)) == (503, "vector_index_unavailable")
        assert crasher.kills == 2  # retried after the backoff, and backed off longer
        assert int(second.headers["Retry-After"]) > RETRY_S

        crasher.disarm()
        time.sleep(int(second.headers["Retry-After"]) + 0.3)
        created = _created(create)
        assert created.status_code == 201, created.text
        assert crasher.kills == 2
        health = httpx.get(f"{base}/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert "index_backoff" not in health.json()["search"]
        assert _index_valid(postgres.url, FakeEngine.dimensions) is True


def _created(create: Any) -> httpx.Response:
    """POST once the pool has its connections back (database_unavailable until then)."""
    deadline = time.monotonic() + 20
    while True:
        response: httpx.Response = create("kb")
        if error_code(response) != "database_unavailable" or time.monotonic() > deadline:
            return response
        time.sleep(0.5)
