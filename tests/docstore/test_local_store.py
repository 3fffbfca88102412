"""The embedded store: the contract (exact and HNSW search), then what is local to it:
its files, lazy loading and eviction, crash safety, recall and CJK keyword search."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from embedgate.docstore.base import Document, TenantDeleted, Upsert
from embedgate.docstore.local import index_files as local_index_files
from embedgate.docstore.local.cache import directory_name
from embedgate.docstore.local.store import LocalDocumentStore
from tests.docstore.contract import *  # noqa: F403  (the contract suite runs here)
from tests.docstore.contract import collection, fill, ids_by_keyword, ids_by_vector, item, unit

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["exact", "hnsw"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[LocalDocumentStore]:  # fmt: skip
    """Exact search, and HNSW for every collection (threshold 0) through the same suite."""
    threshold = 20_000 if request.param == "exact" else 0
    opened = await LocalDocumentStore.open(tmp_path / "data", exact_threshold=threshold)
    yield opened
    await opened.aclose()


def tenant_dir(data: Path, tenant: str) -> Path:
    return data / "tenants" / hashlib.sha256(tenant.encode()).hexdigest()[:32]


def clustered(count: int, dimensions: int, seed: int) -> np.ndarray[Any, Any]:
    """Unit vectors around 200 topics on a 32-dimensional subspace, plus noise: like text
    embeddings, they have neighbours (uniform random vectors in high dimensions do not)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((32, dimensions)).astype(np.float32)
    topics = np.random.default_rng(1).standard_normal((200, 32)).astype(np.float32)
    latent = topics[rng.integers(0, 200, count)] + rng.standard_normal((count, 32))
    rows = latent.astype(np.float32) @ basis + 2 * rng.standard_normal((count, dimensions))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def exact_top(vectors: np.ndarray[Any, Any], query: np.ndarray[Any, Any], k: int,
              rows: np.ndarray[Any, Any] | None = None) -> list[int]:  # fmt: skip
    rows = np.arange(len(vectors)) if rows is None else rows
    scores = vectors[rows] @ query
    return [int(rows[i]) for i in np.argsort(-scores, kind="stable")[:k]]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def every_path(root: Path) -> list[str]:
    return [str(path) for path in root.rglob("*")]


# files


async def test_tenant_directories_are_hashed_and_private(tmp_path: Path) -> None:
    tenant, name = "../../etc/passwd\u00e9", "My.Docs-1"
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=0)
    await store.create_collection(tenant, collection(name))
    await store.collection(tenant, name).upsert([item("../x", "text", unit(1, 0, 0, 0))])
    assert await store.collection(tenant, name).search_vector(
        unit(1, 0, 0, 0), top_k=1, filter=None, min_score=None
    )
    await store.aclose()
    root = tmp_path / "tenants"
    home = tenant_dir(tmp_path, tenant)
    assert home.name == directory_name(tenant)
    assert [p.name for p in root.iterdir()] == [home.name]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "documents.db").stat().st_mode) == 0o600
    names = sorted(p.name for p in home.iterdir())
    assert names[0].startswith("collection-1-")
    assert names[0].endswith(".usearch")
    assert names[1:] == ["collection-1.json", "documents.db"]
    for path in every_path(tmp_path):
        assert "passwd" not in path
        assert "Docs" not in path
        assert not path.endswith("/x")


async def test_reads_create_nothing_and_load_nothing(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    assert await store.collection("ghost", "docs").get() is None
    assert await store.list_collections("ghost") == []
    assert await ids_by_vector(store, "ghost", unit(1, 0, 0, 0)) == []
    assert await store.collection("ghost", "docs").delete() is False
    assert list((tmp_path / "tenants").iterdir()) == []
    await fill(store, "t1")
    await store.aclose()
    again = await LocalDocumentStore.open(tmp_path)
    assert (again.cache.open_count(), again.cache.loaded_bytes()) == (0, 0)  # lazy
    assert await again.collection("t1", "docs").get() is not None
    assert (again.cache.open_count(), again.cache.loaded_bytes()) == (1, 0)  # no vectors yet
    assert await ids_by_vector(again, "t1", unit(1, 0, 0, 0), top_k=1) == ["cat"]
    assert again.cache.open_count() == 1
    assert again.cache.loaded_bytes() > 0
    await again.aclose()


async def test_deletes_erase_rows_and_files(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=0)
    await fill(store, "t1")
    await fill(store, "t1", "kept")
    for name in ("docs", "kept"):  # build and save both graphs
        await store.collection("t1", name).search_vector(
            unit(1, 0, 0, 0), top_k=1, filter=None, min_score=None
        )
    home = tenant_dir(tmp_path, "t1")
    assert (home / "collection-1.json").exists()
    assert await store.collection("t1", "docs").delete()
    assert sorted(p.name for p in home.glob("collection-1*")) == []
    assert (home / "collection-2.json").exists()
    assert await store.collection("t1", "kept").delete_document("cat")
    with sqlite3.connect(home / "documents.db") as raw:
        assert raw.execute("SELECT count(*) FROM documents").fetchone() == (3,)
        assert raw.execute("SELECT count(*) FROM documents_fts").fetchone() == (3,)
        assert raw.execute("SELECT count(*) FROM metadata_values").fetchone() == (7,)
        assert raw.execute("SELECT name FROM collections").fetchall() == [("kept",)]
    raw.close()
    await store.delete_tenant("t1")
    assert not home.exists()
    await store.aclose()


async def test_deleted_text_leaves_no_trace_in_the_files(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    await fill(store, "t1", "kept")
    await store.create_collection("t1", collection())
    secrets = ["Zebraunicorn, first secret!", "Quokkanarwhal, second secret!"]
    await store.collection("t1", "docs").upsert(
        [
            item("s0", secrets[0], unit(1, 0, 0, 0)),
            item("s1", secrets[1], unit(0, 1, 0, 0)),
            item("k", "kept text", unit(0, 0, 1, 0)),
        ]
    )
    assert await store.collection("t1", "docs").delete_document("s1")
    await store.aclose()
    files = b"".join(path.read_bytes() for path in tenant_dir(tmp_path, "t1").iterdir())
    assert secrets[0].encode() in files
    assert secrets[1].encode() not in files  # the row is zeroed (secure_delete)
    store = await LocalDocumentStore.open(tmp_path)
    assert await store.collection("t1", "docs").delete()
    files = b"".join(path.read_bytes() for path in tenant_dir(tmp_path, "t1").iterdir())
    for gone in (secrets[0].encode(), b"zebraunicorn", b"quokkanarwhal"):  # terms too
        assert gone not in files
    assert b"chased" in files
    await store.aclose()


# vector search


async def test_ann_recall_against_exact(tmp_path: Path) -> None:
    dims, count = 128, 20_000
    vectors = clustered(count, dims, seed=2)
    queries = clustered(100, dims, seed=3)
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=1_000)
    await store.create_collection("t1", collection(dimensions=dims))
    groups = {"rare": lambda i: i % 100 == 7, "quarter": lambda i: i % 4 == 1}
    for start in range(0, count, 2_000):
        await store.collection("t1", "docs").upsert([
            item(f"d{i:05d}", f"doc {i}", vectors[i], rare=groups["rare"](i),
                 quarter=groups["quarter"](i))
            for i in range(start, start + 2_000)
        ])  # fmt: skip

    async def recall(flt: dict[str, Any] | None, rows: np.ndarray[Any, Any] | None) -> float:
        found = 0.0
        for query in queries:
            truth = {f"d{i:05d}" for i in exact_top(vectors, query, 10, rows)}
            hits = await store.collection("t1", "docs").search_vector(
                query, top_k=10, filter=flt, min_score=None
            )
            for hit in hits:  # scores are exact cosines, whatever found the hit
                assert hit.score == pytest.approx(float(vectors[int(hit.id[1:])] @ query), abs=1e-4)
            found += len(truth & {hit.id for hit in hits}) / 10
        return found / len(queries)

    assert await recall(None, None) >= 0.95
    rare = np.array([i for i in range(count) if groups["rare"](i)])
    assert await recall({"rare": True}, rare) == 1.0  # 200 documents: searched exactly
    quarter = np.array([i for i in range(count) if groups["quarter"](i)])
    assert await recall({"quarter": True}, quarter) >= 0.95  # oversampled HNSW
    # updates and deletes keep the graph right
    moved = clustered(2_000, dims, seed=4)
    await store.collection("t1", "docs").upsert(
        [item(f"d{i:05d}", f"doc {i}", moved[i]) for i in range(2_000)]
    )
    vectors[:2_000] = moved
    for i in range(2_000, 2_500):
        assert await store.collection("t1", "docs").delete_document(f"d{i:05d}")
    vectors[2_000:2_500] = 0  # scores 0: never in a top 10
    assert await recall(None, None) >= 0.95
    await store.aclose()


async def test_index_catches_up_after_a_restart(tmp_path: Path) -> None:
    vectors = clustered(430, 16, seed=5)
    first = await LocalDocumentStore.open(tmp_path, exact_threshold=50)
    await first.create_collection("t1", collection(dimensions=16))
    await first.collection("t1", "docs").upsert(
        [item(f"d{i}", f"doc {i}", vectors[i]) for i in range(400)]
    )
    await first.collection("t1", "docs").search_vector(
        vectors[0], top_k=1, filter=None, min_score=None
    )
    assert (tenant_dir(tmp_path, "t1") / "collection-1.json").exists()  # built and saved
    await first.collection("t1", "docs").upsert(
        [item(f"d{i}", f"doc {i}", vectors[i]) for i in range(400, 430)]
    )
    for i in range(5):
        assert await first.collection("t1", "docs").delete_document(f"d{i}")
    # no aclose(): the saved graph is 35 changes behind, as after a crash
    second = await LocalDocumentStore.open(tmp_path, exact_threshold=50)
    for i in range(430):
        found = await ids_by_vector(second, "t1", vectors[i], top_k=3)
        assert (f"d{i}" in found) == (i >= 5)
    handle = second.cache.tenant("t1")
    index = second.cache.index(handle, 1)
    assert index is not None
    assert index.graph is not None
    assert index.unsaved == 35  # caught up, not rebuilt
    await second.aclose()
    await first.aclose()


async def test_graph_files_go_when_a_collection_shrinks(tmp_path: Path) -> None:
    vectors = clustered(120, 16, seed=9)
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=100)
    await store.create_collection("t1", collection(dimensions=16))
    await store.collection("t1", "docs").upsert(
        [item(f"d{i}", f"doc {i}", vectors[i]) for i in range(120)]
    )
    assert await ids_by_vector(store, "t1", vectors[7], top_k=1) == ["d7"]
    sidecar = local_index_files.sidecar_path(tenant_dir(tmp_path, "t1"), 1)
    assert sidecar.exists()
    for i in range(70):
        assert await store.collection("t1", "docs").delete_document(f"d{i}")
    assert not sidecar.exists()
    assert list(tenant_dir(tmp_path, "t1").glob("*.usearch")) == []
    assert await ids_by_vector(store, "t1", vectors[77], top_k=1) == ["d77"]
    await store.aclose()


@pytest.mark.parametrize("damage", ["garbage", "missing", "sidecar", "escape", "newer"])
async def test_broken_index_files_are_rebuilt(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = clustered(120, 16, seed=6)
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=50)
    await store.create_collection("t1", collection(dimensions=16))
    await store.collection("t1", "docs").upsert(
        [item(f"d{i}", f"secret text {i}", vectors[i], k="meta") for i in range(120)]
    )
    await store.collection("t1", "docs").search_vector(
        vectors[0], top_k=1, filter=None, min_score=None
    )
    await store.aclose()
    home = tenant_dir(tmp_path, "t1")
    sidecar = local_index_files.sidecar_path(home, 1)
    graph = next(home.glob("collection-1-*.usearch"))
    meta = json.loads(sidecar.read_text())
    if damage == "garbage":
        graph.write_bytes(os.urandom(graph.stat().st_size))
    elif damage == "missing":
        graph.unlink()
    elif damage == "sidecar":
        sidecar.write_text("{not json")
    elif damage == "escape":
        sidecar.write_text(json.dumps({**meta, "file": "../../x.usearch"}))
    else:
        sidecar.write_text(json.dumps({**meta, "version": meta["version"] + 9}))
    caplog.set_level(logging.DEBUG)
    again = await LocalDocumentStore.open(tmp_path, exact_threshold=50)
    for i in range(0, 120, 7):
        assert (await ids_by_vector(again, "t1", vectors[i], top_k=1)) == [f"d{i}"]
    assert "secret text" not in caplog.text
    assert "meta" not in caplog.text
    await again.aclose()


async def test_any_json_metadata_is_kept_and_scalars_filter(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    await store.create_collection("t1", collection())
    odd = {"big": 2**70, "nested": {"a": 1}, "list": [1, "x"], "": "empty key", 'é."k': 1.5}
    await store.collection("t1", "docs").upsert([
        item("a", "one", unit(1, 0, 0, 0), **odd), item("b", "two", unit(0, 1, 0, 0), big=2**70 + 1)
    ])  # fmt: skip
    assert await store.collection("t1", "docs").get_document("a") == Document("a", "one", odd)
    query = unit(1, 1, 0, 0)
    assert await ids_by_vector(store, "t1", query, filter={"": "empty key"}) == ["a"]
    assert await ids_by_vector(store, "t1", query, filter={'é."k': 1.5}) == ["a"]
    assert await ids_by_vector(store, "t1", query, filter={"nested": 1}) == []
    assert await ids_by_vector(store, "t1", query, filter={"list": 1}) == []
    assert sorted(await ids_by_vector(store, "t1", query, filter={"big": 2**70})) == ["a", "b"]
    await store.aclose()


async def test_misuse_is_refused(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    await fill(store, "t1")
    with pytest.raises(ValueError, match="dimensions"):
        await ids_by_vector(store, "t1", unit(1, 0, 0))
    assert await ids_by_vector(store, "t1", unit(1, 0, 0, 0), top_k=0) == []
    with pytest.raises(ValueError, match="same text"):  # no vector, and the text changed
        await store.collection("t1", "docs").upsert(
            [Upsert(Document("cat", "new", {}), "hash-new", None)]
        )
    with pytest.raises(ValueError, match="same text"):  # no vector for a new document
        await store.collection("t1", "docs").upsert(
            [Upsert(Document("cow", "moo", {}), "hash-moo", None)]
        )
    with pytest.raises(ValueError, match="operator"):
        await ids_by_vector(store, "t1", unit(1, 0, 0, 0), filter={"kind": {"$gt": 1}})
    with pytest.raises(ValueError, match="scalars"):
        await ids_by_keyword(store, "t1", "cat", filter={"kind": ["pet"]})
    await store.aclose()


# lazy loading, eviction, open files


async def test_memory_and_open_files_stay_bounded(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path, memory_budget_bytes=100_000,
                                          max_open_tenants=8)  # fmt: skip
    vectors = clustered(300 * 10, 16, seed=7)
    before = open_fds()
    biggest = 0
    for n in range(300):
        tenant = f"tenant-{n}"
        await store.create_collection(tenant, collection(dimensions=16))
        await store.collection(tenant, "docs").upsert(
            [item(f"d{i}", f"text {i}", vectors[n * 10 + i]) for i in range(10)]
        )
        assert await ids_by_vector(store, tenant, vectors[n * 10 + 3], top_k=1) == ["d3"]
        handle = store.cache.tenant(tenant)
        loaded = store.cache.index(handle, 1)
        assert loaded is not None
        biggest = max(biggest, loaded.nbytes)
        assert store.cache.open_count() <= 8
        assert store.cache.loaded_bytes() <= 100_000 + biggest
        assert open_fds() <= before + 8 * 3 + 4  # a database, its WAL and shared memory each
    assert len(list((tmp_path / "tenants").iterdir())) == 300
    for n in (0, 150, 299):  # evicted tenants load again
        assert await ids_by_vector(store, f"tenant-{n}", vectors[n * 10 + 5], top_k=1) == ["d5"]
    await store.aclose()
    assert open_fds() <= before


async def test_evicted_graphs_are_saved_and_reloaded(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=20,
                                          memory_budget_bytes=1)  # fmt: skip
    vectors = clustered(6 * 100, 16, seed=8)
    for n in range(6):
        await store.create_collection(f"t{n}", collection(dimensions=16))
        await store.collection(f"t{n}", "docs").upsert(
            [item(f"d{i}", f"text {i}", vectors[n * 100 + i]) for i in range(100)]
        )
        assert await ids_by_vector(store, f"t{n}", vectors[n * 100], top_k=1) == ["d0"]
        await store.collection(f"t{n}", "docs").upsert([item("d0", "moved", vectors[n * 100 + 1])])
    for n in range(5):  # only the last one may stay loaded; the others were saved first
        assert local_index_files.sidecar_path(tenant_dir(tmp_path, f"t{n}"), 1).exists()
        assert store.cache.index(store.cache.tenant(f"t{n}"), 1) is None
        top = await ids_by_vector(store, f"t{n}", vectors[n * 100 + 1], top_k=2)
        assert sorted(top) == ["d0", "d1"]
    await store.aclose()


# crash safety


CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import numpy as np

from embedgate.docstore.base import Collection, Document, Upsert
from embedgate.docstore.local.store import LocalDocumentStore


def vector(n):
    row = np.random.default_rng(n).standard_normal(16).astype(np.float32)
    return row / np.linalg.norm(row)


async def main():
    store = await LocalDocumentStore.open(Path(sys.argv[1]), exact_threshold=40)
    await store.create_collection("t", Collection("docs", "m", 16, {}, datetime.now(UTC)))
    n = 0
    while True:
        batch = [Upsert(Document(f"d{i}", f"word{i} text", {"n": i}), "h", vector(i))
                 for i in range(n, n + 5)]
        await store.collection("t", "docs").upsert(batch)
        print(" ".join(u.document.id for u in batch), flush=True)
        if n % 60 == 0:  # load the index, which saves it now and then
            await store.collection("t", "docs").search_vector(vector(0), top_k=1, filter=None,
                                      min_score=None)
        n += 5


anyio.run(main)
"""


def child_vector(n: int) -> np.ndarray[Any, Any]:
    row = np.random.default_rng(n).standard_normal(16).astype(np.float32)
    return row / np.linalg.norm(row)


async def test_acknowledged_documents_survive_kill_9(tmp_path: Path) -> None:
    child = subprocess.Popen(  # noqa: ASYNC220 - a plain process to kill -9
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert child.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 600 and time.monotonic() < deadline:
        line = child.stdout.readline().decode()
        assert line.endswith("\n"), "the writer died"
        acknowledged += line.split()
    child.kill()  # SIGKILL, in the middle of its next write
    rest = child.stdout.read().decode()
    child.wait()
    acknowledged += [i for line in rest.splitlines(keepends=True) if line.endswith("\n")
                     for i in line.split()]  # fmt: skip
    assert len(acknowledged) >= 600
    store = await LocalDocumentStore.open(tmp_path, exact_threshold=40)
    missed = []  # by the caught-up graph
    for doc_id in acknowledged:
        n = int(doc_id[1:])
        assert await store.collection("t", "docs").get_document(doc_id) is not None
        if doc_id not in await ids_by_vector(store, "t", child_vector(n), top_k=3):
            missed.append(doc_id)
        assert await ids_by_keyword(store, "t", f"word{n}", top_k=1) == [doc_id]
    await store.aclose()
    # HNSW is approximate: a node can end up unreachable from the graph's entry point.
    # About one run in twelve, one of these 600 (the same one, built the same way) is not
    # found even in the graph's top 100 although the graph holds its vector (cosine 0.9999
    # to the query). The exact path must find every one: each vector is intact in storage.
    assert len(missed) <= len(acknowledged) // 100, missed
    exact = await LocalDocumentStore.open(tmp_path, exact_threshold=10**6)
    for doc_id in acknowledged:
        top = await ids_by_vector(exact, "t", child_vector(int(doc_id[1:])), top_k=1)
        assert top == [doc_id]
    await exact.aclose()


# keywords


async def test_chinese_and_japanese_keyword_search(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    await store.create_collection("t1", collection())
    await store.collection("t1", "docs").upsert([
        item("bj", "我爱北京天安门", unit(1, 0, 0, 0)),
        item("nj", "南京是一座古城, 也有大学。", unit(0, 1, 0, 0)),
        item("pku", "北京大学 (Peking University) 位于北京。", unit(0, 0, 1, 0)),
        item("ja", "東京タワーに行きました", unit(0, 0, 0, 1)),
    ])  # fmt: skip
    assert sorted(await ids_by_keyword(store, "t1", "北京")) == ["bj", "pku"]  # not 南京
    assert sorted(await ids_by_keyword(store, "t1", "京")) == ["bj", "ja", "nj", "pku"]
    assert sorted(await ids_by_keyword(store, "t1", "大学")) == ["nj", "pku"]
    assert (await ids_by_keyword(store, "t1", "北京大学"))[0] == "pku"  # more bigrams match
    assert await ids_by_keyword(store, "t1", "天安门广场") == ["bj"]
    assert await ids_by_keyword(store, "t1", "京北") == []  # characters, not a bag of them
    assert await ids_by_keyword(store, "t1", "university") == ["pku"]
    assert await ids_by_keyword(store, "t1", "东京 東京") == ["ja"]
    assert await ids_by_keyword(store, "t1", "タワー") == ["ja"]
    await store.aclose()


async def test_keywords_are_stemmed_and_operators_are_words(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    await fill(store, "t1")
    assert set(await ids_by_keyword(store, "t1", "Cats CHASING")) == {"cat", "dog"}
    assert await ids_by_keyword(store, "t1", "swimming") == ["fish"]
    assert await ids_by_keyword(store, "t1", "fish AND zebra") == ["fish"]  # any term
    assert set(await ids_by_keyword(store, "t1", "(sea) -car")) == {"fish", "car"}
    assert set(await ids_by_keyword(store, "t1", '"cat')) == {"cat", "dog"}
    assert await ids_by_keyword(store, "t1", "NOT") == []
    assert sorted(await ids_by_keyword(store, "t1", "sea*")) == ["car", "fish"]
    await store.aclose()


async def test_a_stuck_tenant_holds_only_its_share_of_threads(tmp_path: Path) -> None:
    """60 calls of a tenant whose lock is taken (as by one slow call) hold at most
    ``tenant_concurrency`` worker threads: another tenant is served meanwhile, not after
    them (without the share, they took all 40 of anyio's threads)."""
    store = await LocalDocumentStore.open(tmp_path / "data", tenant_concurrency=4)
    await fill(store, "a")
    await fill(store, "b")
    handle = store.cache.tenant("a")
    handle.lock.acquire()
    async with anyio.create_task_group() as group:
        try:
            for _ in range(60):
                group.start_soon(store.list_collections, "a")
            await anyio.sleep(0.3)
            with anyio.fail_after(5):
                served = await store.list_collections("b")
        finally:
            handle.lock.release()
    assert [c.name for c in served] == ["docs"]
    await store.aclose()


async def test_sweep_removes_the_directories_of_no_live_tenant(tmp_path: Path) -> None:
    store = await LocalDocumentStore.open(tmp_path)
    for uid in ("tn_live", "tn_orphan"):
        await fill(store, uid)
    await store.aclose()
    store = await LocalDocumentStore.open(tmp_path)  # a restart after a crash
    assert await store.sweep({"tn_live", "tn_never-wrote"}) == 1
    assert tenant_dir(tmp_path, "tn_live").is_dir()
    assert not tenant_dir(tmp_path, "tn_orphan").exists()
    assert len(await store.list_collections("tn_live")) == 1
    await store.aclose()


async def test_a_deleted_tenant_stays_refused_across_restarts_and_processes(
    tmp_path: Path,
) -> None:
    server = await LocalDocumentStore.open(tmp_path)
    cli = await LocalDocumentStore.open(tmp_path)  # `embedgate tenants delete` beside it
    await fill(server, "tn_a")
    await cli.delete_tenant("tn_a")
    with pytest.raises(TenantDeleted):  # the server's write after another process's delete
        await server.collection("tn_a", "docs").upsert([item("z1", "zombie", unit(1, 0, 0, 0))])
    assert not tenant_dir(tmp_path, "tn_a").exists()
    await server.aclose()
    await cli.aclose()
    restarted = await LocalDocumentStore.open(tmp_path)
    with pytest.raises(TenantDeleted):
        await fill(restarted, "tn_a")
    # The sweep keeps a half-deleted tenant's mark (still in the state store)...
    await restarted.sweep({"tn_a"})
    with pytest.raises(TenantDeleted):
        await fill(restarted, "tn_a")
    # ...and forgets the mark once the tenant is gone for good: its uid never comes back.
    await restarted.sweep(set())
    assert (tmp_path / "tenants" / "deleted").read_text() == ""
    await restarted.aclose()
