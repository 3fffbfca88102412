"""The ``DocumentStore`` contract: every store implementation must pass these tests.

A test module runs them by importing them and providing a ``store`` fixture that yields a
fresh, empty store (its own data, closed afterwards)::

    from tests.docstore.contract import *  # noqa: F403

    @pytest.fixture
    async def store(tmp_path: Path) -> AsyncIterator[DocumentStore]:
        ...

Tenants are plain strings; each test uses its own tenant and collection names.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from embedgate.docstore.base import (
    Collection,
    CollectionExists,
    CollectionHandle,
    Document,
    DocumentStore,
    Hit,
    LimitExceeded,
    Limits,
    TenantDeleted,
    Upsert,
    Usage,
    Vector,
)

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
SYNTAX = ['"unbalanced', "(cat OR", "cat AND", "NOT", "cat*", "-cat", "a) (b", "NEAR(x y)",
          'say "hi"', "col:cat", "^cat", "+", "'", "\\", "*", "", "   "]  # fmt: skip


def unit(*values: float) -> Vector:
    row = np.asarray(values, dtype=np.float32)
    return row / np.linalg.norm(row)


def collection(name: str = "docs", dimensions: int = 4, **metadata: Any) -> Collection:
    return Collection(name, "all-minilm-l6-v2", dimensions, metadata, NOW)


def item(doc_id: str, text: str, vector: Vector | None, **metadata: Any) -> Upsert:
    return Upsert(Document(doc_id, text, metadata), f"hash-{text}", vector)


PETS = [
    item("cat", "the cat sat on the mat", unit(1, 0, 0, 0), kind="pet", legs=4),
    item("dog", "a dog chased the cat", unit(1, 1, 0, 0), kind="pet", legs=4.0, flag=1),
    item("fish", "fish swim in the sea", unit(0, 1, 0, 0), kind="pet", legs=0),
    item("car", "a car drove to the sea", unit(0, 0, 1, 0), kind="thing", flag=True),
]


async def fill(store: DocumentStore, tenant: str, name: str = "docs") -> None:
    await store.create_collection(tenant, collection(name))
    await store.collection(tenant, name).upsert(PETS)


async def ids_by_vector(store: DocumentStore, tenant: str, query: Vector, **options: Any
                        ) -> list[str]:  # fmt: skip
    values: dict[str, Any] = {"top_k": 10, "filter": None, "min_score": None, **options}
    return [hit.id for hit in await store.collection(tenant, "docs").search_vector(query, **values)]


async def ids_by_keyword(store: DocumentStore, tenant: str, query: str, **options: Any
                         ) -> list[str]:  # fmt: skip
    values: dict[str, Any] = {"top_k": 10, "filter": None, **options}
    return [
        hit.id for hit in await store.collection(tenant, "docs").search_keyword(query, **values)
    ]


async def count(store: DocumentStore, tenant: str, name: str = "docs") -> int:
    found = await store.collection(tenant, name).get()
    assert found is not None
    return found.document_count


# collections


async def test_collections_lifecycle(store: DocumentStore) -> None:
    await store.ping()
    zeta = collection("zeta", dimensions=8, lang="en", nested={"名前": ["中文", 1]})
    await store.create_collection("t1", zeta)
    await store.create_collection("t1", collection("Alpha"))
    with pytest.raises(CollectionExists):
        await store.create_collection("t1", collection("zeta"))
    assert await store.collection("t1", "zeta").get() == zeta
    assert sorted(c.name for c in await store.list_collections("t1")) == ["Alpha", "zeta"]
    assert await store.collection("t1", "ZETA").get() is None  # names are case-sensitive
    assert await store.collection("t1", "zeta").delete()
    assert not await store.collection("t1", "zeta").delete()
    assert await store.collection("t1", "zeta").get() is None
    assert [c.name for c in await store.list_collections("t1")] == ["Alpha"]
    await store.create_collection("t1", collection("zeta"))  # the name is free again


async def test_unknown_tenant_and_collection_are_empty(store: DocumentStore) -> None:
    await store.create_collection("t1", collection("other"))
    for tenant in ("nobody", "t1"):
        assert [c.name for c in await store.list_collections(tenant)] == (
            [] if tenant == "nobody" else ["other"]
        )
        assert await store.collection(tenant, "docs").get() is None
        assert await store.collection(tenant, "docs").text_hashes(["cat"]) == {}
        assert await store.collection(tenant, "docs").get_document("cat") is None
        assert await store.collection(tenant, "docs").get_vector("cat") is None
        assert await store.collection(tenant, "docs").list_documents(after=None, limit=5) == []
        assert not await store.collection(tenant, "docs").delete_document("cat")
        assert await ids_by_vector(store, tenant, unit(1, 0, 0, 0)) == []
        assert await ids_by_keyword(store, tenant, "cat") == []
        assert not await store.collection(tenant, "docs").delete()


async def test_upsert_into_a_missing_collection_is_refused(store: DocumentStore) -> None:
    with pytest.raises(LookupError):
        await store.collection("t1", "docs").upsert(PETS)
    await store.create_collection("t1", collection("other"))
    with pytest.raises(LookupError):
        await store.collection("t1", "docs").upsert(PETS)
    assert await count(store, "t1", "other") == 0


# documents


async def test_documents_round_trip(store: DocumentStore) -> None:
    await fill(store, "t1")
    assert await count(store, "t1") == 4
    assert await store.collection("t1", "docs").get_document("dog") == Document(
        "dog", "a dog chased the cat", {"kind": "pet", "legs": 4.0, "flag": 1}
    )
    vector = await store.collection("t1", "docs").get_vector("dog")
    assert vector is not None
    assert vector.dtype == np.float32
    assert np.array_equal(vector, unit(1, 1, 0, 0))
    hashes = await store.collection("t1", "docs").text_hashes(["cat", "nope", "car"])
    assert hashes == {"cat": "hash-the cat sat on the mat", "car": "hash-a car drove to the sea"}
    assert await store.collection("t1", "docs").get_document("nope") is None
    assert await store.collection("t1", "docs").get_vector("nope") is None


async def test_upsert_new_changed_and_unchanged(store: DocumentStore) -> None:
    await fill(store, "t1")
    await store.collection("t1", "docs").upsert([
        Upsert(Document("cat", "the cat sat on the mat", {"new": "yes"}),
               "hash-the cat sat on the mat", None),  # unchanged text: keep the vector
        item("dog", "a dog slept", unit(0, 0, 1, 1), kind="pet"),  # changed
        item("cow", "a cow grazed", unit(0, 0, 0, 1)),  # new
    ])  # fmt: skip
    assert await store.collection("t1", "docs").get_document("cat") == Document(
        "cat", "the cat sat on the mat", {"new": "yes"}
    )
    assert np.array_equal(await store.collection("t1", "docs").get_vector("cat"), unit(1, 0, 0, 0))  # type: ignore[arg-type]
    assert np.array_equal(await store.collection("t1", "docs").get_vector("dog"), unit(0, 0, 1, 1))  # type: ignore[arg-type]
    assert await store.collection("t1", "docs").text_hashes(["dog"]) == {"dog": "hash-a dog slept"}
    assert await count(store, "t1") == 5
    # search sees the new vector, text and metadata, and forgets the old ones
    assert (await ids_by_vector(store, "t1", unit(0, 0, 1, 1)))[0] == "dog"
    assert "dog" not in await ids_by_keyword(store, "t1", "chased")
    assert await ids_by_keyword(store, "t1", "slept") == ["dog"]
    assert await ids_by_vector(store, "t1", unit(1, 0, 0, 0), filter={"new": "yes"}) == ["cat"]
    pets = await ids_by_vector(store, "t1", unit(1, 0, 0, 0), filter={"kind": "pet"})
    assert sorted(pets) == ["dog", "fish"]  # the metadata was replaced, not merged


async def test_wrong_dimensions_are_refused_and_the_batch_is_not_written(
    store: DocumentStore,
) -> None:
    await fill(store, "t1")
    batch = [item("new", "new text", unit(1, 0, 0, 0)), item("bad", "bad", unit(1, 0, 0))]
    with pytest.raises(ValueError, match="dimensions"):
        await store.collection("t1", "docs").upsert(batch)
    assert await store.collection("t1", "docs").get_document("new") is None
    assert await count(store, "t1") == 4
    assert "new" not in await ids_by_vector(store, "t1", unit(1, 0, 0, 0))


async def test_list_documents_pages_in_code_point_order(store: DocumentStore) -> None:
    await store.create_collection("t1", collection())
    ids = ["b", "B", "a", "é", "Z10", "Z9", "_", "ä", "a b", "a/b"]
    await store.collection("t1", "docs").upsert(
        [item(i, f"text {i}", unit(1, 0, 0, 0)) for i in ids]
    )
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await store.collection("t1", "docs").list_documents(after=after, limit=3)
        assert len(page) <= 4  # limit + 1 tells has_more
        seen += [doc.id for doc in page[:3]]
        if len(page) <= 3:
            break
        after = page[2].id
    assert seen == sorted(ids)
    first = await store.collection("t1", "docs").list_documents(after=None, limit=100)
    assert [doc.id for doc in first] == sorted(ids)
    assert first[0] == Document("B", "text B", {})
    assert await store.collection("t1", "docs").list_documents(after="é", limit=3) == []


async def test_delete_document(store: DocumentStore) -> None:
    await fill(store, "t1")
    assert await store.collection("t1", "docs").delete_document("cat")
    assert not await store.collection("t1", "docs").delete_document("cat")
    assert await store.collection("t1", "docs").get_document("cat") is None
    assert await store.collection("t1", "docs").get_vector("cat") is None
    assert await store.collection("t1", "docs").text_hashes(["cat"]) == {}
    assert await count(store, "t1") == 3
    assert "cat" not in await ids_by_vector(store, "t1", unit(1, 0, 0, 0))
    assert "cat" not in await ids_by_keyword(store, "t1", "cat mat")
    assert [
        d.id for d in await store.collection("t1", "docs").list_documents(after=None, limit=9)
    ] == ["car", "dog", "fish"]
    await store.collection("t1", "docs").upsert([item("cat", "a new cat", unit(0, 0, 0, 1))])
    assert (await ids_by_vector(store, "t1", unit(0, 0, 0, 1)))[0] == "cat"


async def test_concurrent_writes_are_all_kept(store: DocumentStore) -> None:
    await store.create_collection("t1", collection())
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((40, 4)).astype(np.float32)

    async def write(i: int) -> None:
        await store.collection("t1", "docs").upsert(
            [item(f"d{i:02d}", f"text {i}", unit(*vectors[i]))]
        )

    async with anyio.create_task_group() as group:
        for i in range(40):
            group.start_soon(write, i)
    assert await count(store, "t1") == 40
    for i in (0, 17, 39):
        assert (await ids_by_vector(store, "t1", unit(*vectors[i]), top_k=1)) == [f"d{i:02d}"]


async def test_export_documents_pages_through_them_as_stored(store: DocumentStore) -> None:
    await fill(store, "t1")
    await fill(store, "t2")  # another tenant's collection of the same name
    await store.collection("t2", "docs").upsert([item("zebra", "only t2 has it", unit(0, 0, 0, 1))])
    seen: list[Upsert] = []
    after: str | None = None
    while page := await store.collection("t1", "docs").export_documents(after=after, limit=3):
        assert len(page) <= 3
        seen += page
        after = page[-1].document.id
    assert [u.document.id for u in seen] == ["car", "cat", "dog", "fish"]
    by_id = {u.document.id: u for u in PETS}
    for exported in seen:
        original = by_id[exported.document.id]
        assert exported.document == original.document
        assert exported.text_hash == original.text_hash
        assert exported.vector is not None
        assert exported.vector.dtype == np.float32
        assert np.array_equal(exported.vector, original.vector)  # type: ignore[arg-type]
    assert await store.collection("t1", "docs").export_documents(after="fish", limit=3) == []
    for tenant, name in (("nobody", "docs"), ("t1", "missing")):
        assert await store.collection(tenant, name).export_documents(after=None, limit=3) == []


async def test_exported_documents_restore_without_embedding(store: DocumentStore) -> None:
    await fill(store, "t1")
    exported = await store.collection("t1", "docs").export_documents(after=None, limit=100)
    await store.create_collection("t9", collection())
    await store.collection("t9", "docs").upsert(exported)
    for tenant in ("t1", "t9"):
        ranked = await ids_by_vector(store, tenant, unit(1, 0.5, 0, 0))
        assert ranked == ["dog", "cat", "fish", "car"]
        assert sorted(await ids_by_keyword(store, tenant, "sea")) == ["car", "fish"]
        hashes = await store.collection(tenant, "docs").text_hashes(["dog"])
        assert hashes == {"dog": "hash-a dog chased the cat"}
    assert await count(store, "t9") == 4


# search


async def test_vector_search_is_cosine_best_first(store: DocumentStore) -> None:
    await fill(store, "t1")
    query = unit(1, 0.2, 0, 0)
    hits = await store.collection("t1", "docs").search_vector(
        query, top_k=3, filter=None, min_score=None
    )
    assert [hit.id for hit in hits] == ["cat", "dog", "fish"]
    expected = [float(unit(*v.vector) @ query) for v in PETS[:3] if v.vector is not None]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-5)
    assert hits[0] == Hit("cat", "the cat sat on the mat", hits[0].score,
                          {"kind": "pet", "legs": 4})  # fmt: skip
    assert await ids_by_vector(store, "t1", query, top_k=1) == ["cat"]
    assert await ids_by_vector(store, "t1", query, min_score=0.5) == ["cat", "dog"]
    assert await ids_by_vector(store, "t1", query, min_score=0.99) == []
    everything = await store.collection("t1", "docs").search_vector(
        query, top_k=10, filter=None, min_score=-1.0
    )
    assert [hit.id for hit in everything] == ["cat", "dog", "fish", "car"]
    assert everything[-1].score == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"kind": "pet"}, ["cat", "dog", "fish"]),
        ({"legs": 4}, ["cat", "dog"]),  # JSON numbers: 4 equals 4.0
        ({"legs": "4"}, []),  # a string is not a number
        ({"kind": "pet", "legs": {"$in": [0, 7]}}, ["fish"]),
        ({"kind": {"$in": ["thing", "plant"]}}, ["car"]),
        ({"kind": {"$in": []}}, []),
        ({"flag": True}, ["car"]),  # true is not 1
        ({"flag": 1}, ["dog"]),  # nor 1 true
        ({"flag": 1.0}, ["dog"]),
        ({"flag": {"$in": [True, "1"]}}, ["car"]),
        ({"legs": False}, []),  # nor is false 0
        ({"missing": None}, []),
        ({"kind": "pet'; DROP TABLE documents; --"}, []),
        ({'kind"; --': "pet"}, []),
    ],
)
async def test_filters(store: DocumentStore, flt: dict[str, Any], expected: list[str]) -> None:
    await fill(store, "t1")
    found = await ids_by_vector(store, "t1", unit(1, 0, 0, 0), filter=flt)
    assert sorted(found) == expected
    words = await ids_by_keyword(store, "t1", "cat sea car fish", filter=flt)
    assert sorted(words) == expected


async def test_null_metadata_values_match_null(store: DocumentStore) -> None:
    await store.create_collection("t1", collection())
    await store.collection("t1", "docs").upsert([
        item("a", "one", unit(1, 0, 0, 0), owner=None), item("b", "two", unit(0, 1, 0, 0)),
    ])  # fmt: skip
    assert await ids_by_vector(store, "t1", unit(1, 0, 0, 0), filter={"owner": None}) == ["a"]
    found = await ids_by_vector(store, "t1", unit(1, 0, 0, 0),
                                filter={"owner": {"$in": [None, "x"]}})  # fmt: skip
    assert found == ["a"]


async def test_filtered_search_returns_the_true_top_k(store: DocumentStore) -> None:
    """A selective filter still fills top_k with the best matching documents."""
    await store.create_collection("t1", collection(dimensions=8))
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    await store.collection("t1", "docs").upsert(
        [item(f"d{i:03d}", f"doc {i}", v, group=i % 50) for i, v in enumerate(vectors)]
    )
    query = unit(*rng.standard_normal(8))
    members = [i for i in range(300) if i % 50 in (3, 4)]
    truth = sorted(members, key=lambda i: -float(vectors[i] @ query))[:5]
    found = await ids_by_vector(store, "t1", query, top_k=5, filter={"group": {"$in": [3, 4]}})
    assert found == [f"d{i:03d}" for i in truth]


async def test_keyword_search_ranks_by_relevance(store: DocumentStore) -> None:
    await fill(store, "t1")
    hits = await store.collection("t1", "docs").search_keyword("cat", top_k=10, filter=None)
    assert {hit.id for hit in hits} == {"cat", "dog"}
    assert all(hit.score > 0 for hit in hits)
    assert hits[0].text in {"the cat sat on the mat", "a dog chased the cat"}
    # any term matches; more matching terms rank higher; case does not matter
    hits = await store.collection("t1", "docs").search_keyword("CAT Chased", top_k=10, filter=None)
    assert [hit.id for hit in hits] == ["dog", "cat"]
    assert hits[0].score > hits[1].score
    assert await ids_by_keyword(store, "t1", "cat", top_k=1, filter={"kind": "pet"}) in (
        ["cat"], ["dog"]
    )  # fmt: skip
    assert await ids_by_keyword(store, "t1", "zebra") == []
    assert await ids_by_keyword(store, "t1", "sea", filter={"kind": "thing"}) == ["car"]


@pytest.mark.parametrize("text", SYNTAX)
async def test_keyword_search_takes_any_text(store: DocumentStore, text: str) -> None:
    await fill(store, "t1")
    hits = await store.collection("t1", "docs").search_keyword(text, top_k=5, filter=None)
    assert all(isinstance(hit, Hit) for hit in hits)


# collection handles (base.CollectionHandle)


async def nothing_of(handle: CollectionHandle, doc_id: str) -> None:
    """``handle`` reads nothing, writes nothing and deletes nothing."""
    assert await handle.get() is None
    assert await handle.get_document(doc_id) is None
    assert await handle.get_vector(doc_id) is None
    assert await handle.text_hashes([doc_id]) == {}
    assert await handle.list_documents(after=None, limit=5) == []
    assert await handle.export_documents(after=None, limit=5) == []
    vector = unit(1, 1, 1, 1)
    assert await handle.search_vector(vector, top_k=5, filter=None, min_score=None) == []
    assert await handle.search_keyword("cat dog fish car new", top_k=5, filter=None) == []
    with pytest.raises(LookupError):
        await handle.upsert([item(doc_id, "written through the wrong handle", vector)])
    assert not await handle.delete_document(doc_id)
    assert not await handle.delete()


async def test_a_handle_names_its_tenant_and_collection(store: DocumentStore) -> None:
    handle = store.collection("t1", "docs")  # no I/O: nothing needs to exist
    assert (handle.tenant, handle.name) == ("t1", "docs")
    assert await handle.get() is None
    await fill(store, "t1")  # a handle made before its collection finds it once it exists
    found = await handle.get()
    assert found is not None
    assert (found.name, found.document_count) == ("docs", 4)
    await handle.upsert([item("cow", "a cow grazed", unit(0, 0, 0, 1))])
    assert await count(store, "t1") == 5


async def test_a_handle_never_sees_another_tenants_collection(store: DocumentStore) -> None:
    await fill(store, "a")
    await fill(store, "a", "only-a")
    await store.create_collection("b", collection())
    theirs = store.collection("b", "docs")
    await theirs.upsert([item("zebra", "only b has a zebra", unit(0, 0, 0, 1))])
    assert [d.id for d in await theirs.list_documents(after=None, limit=9)] == ["zebra"]
    assert await theirs.get_document("cat") is None
    assert await theirs.text_hashes(["cat", "zebra"]) == {"zebra": "hash-only b has a zebra"}
    hits = await theirs.search_vector(unit(1, 0, 0, 0), top_k=9, filter=None, min_score=None)
    assert [hit.id for hit in hits] == ["zebra"]
    assert await theirs.search_keyword("cat sea", top_k=9, filter=None) == []
    await nothing_of(store.collection("b", "only-a"), "cat")
    assert await theirs.delete()
    assert await count(store, "a") == 4
    assert await count(store, "a", "only-a") == 4


@pytest.mark.parametrize("first_call", ["get", "upsert", "search_keyword"])
async def test_a_handle_stays_with_its_collection_when_the_name_is_re_created(
    store: DocumentStore, first_call: str
) -> None:
    """A handle is bound to the collection its first call found: deleted and re-created
    under the same name, that is another collection, which the old handle never reads,
    writes or deletes (collection ids are never reused)."""
    await fill(store, "t1")
    old = store.collection("t1", "docs")
    if first_call == "get":
        assert await old.get() is not None
    elif first_call == "upsert":
        await old.upsert([item("cow", "a cow grazed", unit(0, 0, 0, 1))])
    else:
        assert await old.search_keyword("cat", top_k=1, filter=None) != []
    for _ in range(3):  # a few incarnations: none gets the old one's id
        assert await store.collection("t1", "docs").delete()
        await store.create_collection("t1", collection())
    new = store.collection("t1", "docs")
    await new.upsert([item("new", "a new cat", unit(1, 0, 0, 0))])
    await nothing_of(old, "new")
    assert await new.get_document("new") == Document("new", "a new cat", {})
    assert await count(store, "t1") == 1
    assert await ids_by_keyword(store, "t1", "cat") == ["new"]


async def test_a_bound_handle_of_a_deleted_tenant_writes_nothing(store: DocumentStore) -> None:
    await fill(store, "zombie")
    handle = store.collection("zombie", "docs")
    assert await handle.get() is not None
    await store.delete_tenant("zombie")
    writes = [handle.upsert(PETS), handle.delete_document("cat"), handle.delete()]
    for write in writes:
        with pytest.raises(TenantDeleted):
            await write
    assert await handle.get() is None
    assert await handle.get_document("cat") is None


# tenants


async def test_tenants_are_isolated(store: DocumentStore) -> None:
    await fill(store, "a")
    await store.create_collection("b", collection("docs", dimensions=4, owner="b"))
    await store.collection("b", "docs").upsert([item("cat", "b's own cat", unit(0, 0, 0, 1))])
    found = await store.collection("b", "docs").get()
    assert found is not None
    assert (found.metadata, found.document_count) == ({"owner": "b"}, 1)
    assert await store.collection("b", "docs").get_document("dog") is None
    assert await store.collection("b", "docs").get_document("cat") == Document(
        "cat", "b's own cat", {}
    )
    assert await store.collection("b", "docs").text_hashes(["dog", "car"]) == {}
    assert await ids_by_vector(store, "b", unit(1, 0, 0, 0)) == ["cat"]
    assert await ids_by_keyword(store, "b", "sea dog mat") == []
    assert [
        d.id for d in await store.collection("b", "docs").list_documents(after=None, limit=9)
    ] == ["cat"]
    await store.create_collection("a", collection("only-a"))
    assert [c.name for c in await store.list_collections("b")] == ["docs"]
    assert await store.collection("b", "only-a").get() is None
    assert not await store.collection("b", "docs").delete_document("dog")
    assert not await store.collection("b", "only-a").delete()
    assert await store.collection("b", "docs").delete()
    assert await count(store, "a") == 4
    assert await store.collection("a", "docs").get_document("cat") == Document(
        "cat", "the cat sat on the mat", {"kind": "pet", "legs": 4}
    )


async def test_delete_collection_removes_its_documents(store: DocumentStore) -> None:
    await fill(store, "t1")
    await fill(store, "t1", "kept")
    assert await store.collection("t1", "docs").delete()
    await store.create_collection("t1", collection())
    assert await count(store, "t1") == 0
    assert await store.collection("t1", "docs").get_document("cat") is None
    assert await store.collection("t1", "docs").text_hashes(["cat"]) == {}
    assert await ids_by_vector(store, "t1", unit(1, 0, 0, 0)) == []
    assert await ids_by_keyword(store, "t1", "cat") == []
    assert await count(store, "t1", "kept") == 4


async def test_delete_tenant_erases_everything_of_it_only(store: DocumentStore) -> None:
    await fill(store, "a")
    await fill(store, "a", "more")
    await fill(store, "b")
    await store.delete_tenant("a")
    assert await store.list_collections("a") == []
    assert await store.collection("a", "docs").get_document("cat") is None
    assert await ids_by_keyword(store, "a", "cat") == []
    assert await count(store, "b") == 4
    assert await ids_by_vector(store, "b", unit(1, 0, 0, 0), top_k=1) == ["cat"]
    await store.delete_tenant("a")  # again: nothing to do
    await store.delete_tenant("never-seen")
    # A deleted uid is never written again (a re-created tenant id gets a fresh uid), not
    # even one that never wrote.
    for gone in ("a", "never-seen"):
        with pytest.raises(TenantDeleted):
            await fill(store, gone)
        assert await store.list_collections(gone) == []
    await fill(store, "a2")  # a new uid starts empty and works
    assert await count(store, "a2") == 4


# storage usage and caps (base.Usage, base.Limits)


def pet_bytes() -> int:
    """PETS as base.Usage counts them with compact JSON metadata (the smallest encoding)."""
    compact = [len(json.dumps(p.document.metadata, separators=(",", ":"))) for p in PETS]
    return sum(len(p.document.text.encode()) + 16 for p in PETS) + sum(compact)


async def test_tenant_usage_counts_collections_documents_and_bytes(store: DocumentStore) -> None:
    assert await store.tenant_usage("nobody") == Usage(0, 0, 0)
    await fill(store, "t1")
    await fill(store, "t1", "more")
    await fill(store, "t2")
    usage = await store.tenant_usage("t1")
    assert (usage.collections, usage.documents) == (2, 8)
    # stores encode JSON their own way (PostgreSQL adds spaces): near, never below
    assert 2 * pet_bytes() <= usage.stored_bytes <= 2 * pet_bytes() * 1.3
    assert await store.collection("t1", "more").delete_document("cat")
    smaller = await store.tenant_usage("t1")
    assert smaller.documents == 7
    assert smaller.stored_bytes < usage.stored_bytes
    assert (await store.tenant_usage("t2")).documents == 4  # tenants apart


async def test_a_write_over_a_cap_is_refused_whole(store: DocumentStore) -> None:
    await store.create_collection("t1", collection(), Limits(collections=1))
    with pytest.raises(LimitExceeded) as refused:
        await store.create_collection("t1", collection("second"), Limits(collections=1))
    assert (refused.value.field, refused.value.limit, refused.value.usage.collections) == (
        "collections", 1, 2,
    )  # fmt: skip
    assert [c.name for c in await store.list_collections("t1")] == ["docs"]
    await store.collection("t1", "docs").upsert(PETS[:2], Limits(documents=3))
    with pytest.raises(LimitExceeded) as refused:
        await store.collection("t1", "docs").upsert(PETS[2:], Limits(documents=3))
    assert (refused.value.field, refused.value.usage.documents) == ("documents", 4)
    assert await count(store, "t1") == 2
    assert await store.collection("t1", "docs").get_document("fish") is None
    assert await ids_by_keyword(store, "t1", "sea") == []


async def test_a_replacement_over_the_byte_cap_keeps_the_old_document(
    store: DocumentStore,
) -> None:
    await fill(store, "t1")
    cap = Limits(stored_bytes=(await store.tenant_usage("t1")).stored_bytes + 100)
    await store.collection("t1", "docs").upsert(
        [item("cat", "a cat", unit(1, 0, 0, 0))], cap
    )  # shrinks
    with pytest.raises(LimitExceeded) as refused:
        await store.collection("t1", "docs").upsert(
            [item("cat", "cat " * 100, unit(1, 0, 0, 0))], cap
        )
    assert refused.value.field == "stored_bytes"
    found = await store.collection("t1", "docs").get_document("cat")
    assert found is not None
    assert found.text == "a cat"
    assert sorted(await ids_by_keyword(store, "t1", "cat")) == ["cat", "dog"]


async def test_concurrent_capped_writes_never_cross_the_cap(store: DocumentStore) -> None:
    await store.create_collection("t1", collection())
    await store.create_collection("t1", collection("other"))
    cap = Limits(documents=5)
    outcomes: list[bool] = []

    async def write(i: int) -> None:
        try:
            await store.collection("t1", ("docs", "other")[i % 2]).upsert(
                [item(f"d{i}", f"t {i}", unit(1, i, 0, 0))], cap
            )
            outcomes.append(True)
        except LimitExceeded:
            outcomes.append(False)

    async with anyio.create_task_group() as group:
        for i in range(12):
            group.start_soon(write, i)
    assert sorted(outcomes) == [False] * 7 + [True] * 5
    assert (await store.tenant_usage("t1")).documents == 5
    assert await count(store, "t1") + await count(store, "t1", "other") == 5


async def test_every_write_of_a_deleted_tenant_fails_and_leaves_nothing(
    store: DocumentStore,
) -> None:
    await fill(store, "zombie")
    await store.delete_tenant("zombie")
    writes = [
        store.create_collection("zombie", collection("docs")),
        store.collection("zombie", "docs").upsert(PETS),
        store.collection("zombie", "docs").delete_document("cat"),
        store.collection("zombie", "docs").delete(),
    ]
    for write in writes:
        with pytest.raises(TenantDeleted) as refused:
            await write
        assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")
    assert await store.list_collections("zombie") == []
    assert await store.collection("zombie", "docs").get_document("cat") is None


async def test_a_write_racing_the_delete_is_refused_or_removed(store: DocumentStore) -> None:
    """Writes in flight when the delete begins: each one either lands before it (and is
    then removed with the rest) or is refused; none survives the delete."""
    await fill(store, "racer")
    refused: list[int] = []

    async def writer(n: int) -> None:
        try:
            for round_ in range(1000):
                upsert = [item(f"w{n}-{round_}", "text", unit(1, 1, 1, 1))]
                await store.collection("racer", "docs").upsert(upsert)
                await anyio.lowlevel.checkpoint()
        except TenantDeleted:
            refused.append(n)

    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(writer, n)
        await anyio.sleep(0.05)
        await store.delete_tenant("racer")
    assert sorted(refused) == [0, 1, 2], refused  # every writer was stopped by the delete
    assert await store.list_collections("racer") == []
    assert await store.collection("racer", "docs").get_document("w0-0") is None
