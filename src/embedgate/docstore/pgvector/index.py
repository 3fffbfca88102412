"""The pgvector store's partial HNSW index per dimension count, and the backoff after a
build that crashed the database server.

A pgvector compiled for a newer CPU than the database server's (``-march=native`` on a
machine with AVX-512, run on one without) dies with SIGILL inside ``CREATE INDEX``; the
postmaster then restarts every connection. Retrying at the next request would crash the
database again for every tenant, so a build that lost its server is not retried for a
while (``IndexBackoff``) and the collections that need it answer 503
``vector_index_unavailable`` meanwhile. See docs/pgvector.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from embedgate.errors import EmbedgateError

log = logging.getLogger(__name__)

SCHEMA = "embedgate_search"
INDEX_LOCK = 0x656D6267_00000002  # advisory lock keys: "embg" + a number (see pg_schema)
LOCK_POLL_SECONDS = 0.2
HNSW_M = 16  # pgvector's defaults: good recall up to millions of rows
HNSW_EF_CONSTRUCTION = 64
MAX_VECTOR_INDEX_DIMS = 2000  # pgvector's HNSW limits: vector 2000, halfvec 4000
MAX_HALFVEC_INDEX_DIMS = 4000
MAX_RETRY_S = 3600.0  # the backoff doubles up to an hour
CRASH_SHUTDOWN = "57P02"  # "terminating connection because of crash of another server process"


class IndexBuildCrashed(Exception):
    """The database server went away while building an index, without an error: its
    backend (or a parallel worker of the build) crashed."""


def index_type(dimensions: int) -> str | None:
    """The type an HNSW index of this many dimensions is built on; None: too many."""
    if dimensions <= MAX_VECTOR_INDEX_DIMS:
        return "vector"
    if dimensions <= MAX_HALFVEC_INDEX_DIMS:
        return "halfvec"
    return None


def index_name(dimensions: int) -> str:
    return f"documents_hnsw_{dimensions}"


async def ensure_index(connection: AsyncConnection[Any], dimensions: int) -> bool:
    """Build the partial HNSW index for one dimension count, unless it is there and valid.

    ``CONCURRENTLY`` keeps writes to other collections flowing while it builds; a session
    advisory lock makes replicas build it once. ``connection`` must be in autocommit mode.
    False when no index can exist for that many dimensions (searches are then exact).
    Raises ``IndexBuildCrashed`` when the server died during the build."""
    kind = index_type(dimensions)
    if kind is None:
        return False
    await _lock(connection, INDEX_LOCK)
    try:
        valid = await _index_valid(connection, dimensions)
        if valid is False:  # a build that died half-way leaves an invalid index
            await connection.execute(f"DROP INDEX CONCURRENTLY {SCHEMA}.{index_name(dimensions)}")
        if not valid:
            await _build(connection, dimensions, kind)
            log.info("built the HNSW index for %d dimensions", dimensions)
    finally:
        if not connection.broken:  # a lost connection holds no lock any more
            await connection.execute("SELECT pg_advisory_unlock(%s)", [INDEX_LOCK])
    return True


async def _build(connection: AsyncConnection[Any], dimensions: int, kind: str) -> None:
    try:
        await connection.execute(_create_index(dimensions, kind))
    except psycopg.OperationalError as exc:
        # An ERROR (no space, statement timeout) or an operator's shutdown (57P01) has a
        # SQLSTATE; a backend that crashed closes the connection without one.
        if exc.sqlstate in (None, CRASH_SHUTDOWN):
            raise IndexBuildCrashed(f"{type(exc).__name__}: {exc}".strip()) from exc
        raise


async def _lock(connection: AsyncConnection[Any], key: int) -> None:
    """Take a session advisory lock by polling: a replica blocked inside
    ``pg_advisory_lock`` would be a transaction that the holder's CREATE INDEX CONCURRENTLY
    waits for, a deadlock."""
    while True:
        row = await (await connection.execute("SELECT pg_try_advisory_lock(%s)", [key])).fetchone()
        if row is not None and row[0]:
            return
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _index_valid(connection: AsyncConnection[Any], dimensions: int) -> bool | None:
    query = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)"
    row = await (await connection.execute(query, [f"{SCHEMA}.{index_name(dimensions)}"])).fetchone()
    return None if row is None else bool(row[0])


def _create_index(dimensions: int, kind: str) -> sql.Composed:
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {schema}.documents "
        "USING hnsw ((embedding::{kind}({dims})) {ops}) "
        "WITH (m = {m}, ef_construction = {ef}) WHERE dimensions = {dims}"
    ).format(
        name=sql.Identifier(index_name(dimensions)),
        schema=sql.Identifier(SCHEMA),
        kind=sql.SQL(kind),
        dims=sql.Literal(dimensions),
        ops=sql.SQL(f"{kind}_ip_ops"),
        m=sql.Literal(HNSW_M),
        ef=sql.Literal(HNSW_EF_CONSTRUCTION),
    )


class IndexBackoff:
    """Per dimension count: how many builds in a row crashed the server, and until when the
    next is not tried. The wait is ``first_s``, doubled after every further crash, at most
    ``MAX_RETRY_S``; a build that succeeds forgets it."""

    def __init__(self, first_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._first_s = first_s
        self._clock = clock
        self._failures: dict[int, tuple[int, float]] = {}  # dims -> (crashes, retry at)

    def check(self, dimensions: int) -> None:
        """Raise the 503 while builds for ``dimensions`` are backed off."""
        failures, retry_at = self._failures.get(dimensions, (0, 0.0))
        wait = retry_at - self._clock()
        if failures and wait > 0:
            raise index_unavailable(dimensions, wait)

    def failed(self, dimensions: int, reason: str) -> EmbedgateError:
        """Record a crashed build, log it for the operator; the 503 to answer."""
        failures = self._failures.get(dimensions, (0, 0.0))[0] + 1
        wait = min(MAX_RETRY_S, self._first_s * 2 ** (failures - 1))
        self._failures[dimensions] = (failures, self._clock() + wait)
        log.error(
            "building the HNSW index for %d dimensions crashed the database server (%s; "
            "%d in a row); not retried for %.0f s. Its pgvector may be built for a newer CPU "
            "(e.g. with AVX-512): check it with .ci/check_pgvector.py, see docs/pgvector.md",
            dimensions, reason, failures, wait,
        )  # fmt: skip
        return index_unavailable(dimensions, wait)

    def succeeded(self, dimensions: int) -> None:
        self._failures.pop(dimensions, None)

    def state(self) -> list[dict[str, Any]]:
        """For /health: every dimension count whose last build crashed."""
        now = self._clock()
        return [
            {"dimensions": dims, "crashes": failures,
             "retry_in_s": max(0, math.ceil(retry_at - now))}
            for dims, (failures, retry_at) in sorted(self._failures.items())
        ]  # fmt: skip


def index_unavailable(dimensions: int, wait: float) -> EmbedgateError:
    seconds = max(1, math.ceil(wait))
    return EmbedgateError(
        503, f"Collections of {dimensions} dimensions cannot be created now: building their "
        "HNSW index crashed the database server; its pgvector may have been built for a newer "
        f"CPU (e.g. with AVX-512), see docs/pgvector.md. The build is retried in {seconds} s.",
        code="vector_index_unavailable", headers={"Retry-After": str(seconds)},
    )  # fmt: skip
