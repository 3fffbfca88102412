"""Issue 13, point 1: a tenant id deleted and re-created is a new tenant. Nothing of the old
one is visible (documents written in the moment after the delete included), measurable
(the embedding cache) or counted (usage, quota), and the old key fails at once on the
server that deleted it; on SQLite + the embedded store, and on PostgreSQL + pgvector +
Redis with two replicas, where the other replica may still hold the tenant in its cache.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import replica_env
from tests.docstore.pg_fixtures import pg_server, pg_superuser_url, pgvector_url  # noqa: F401
from tests.helpers import ServerProcess, start_server
from tests.hostile_tenants.conftest import ADMIN, bearer, delete_tenant, make_tenant, serve

KEY_CACHE_SECONDS = 2.0  # tenancy/keys.py and tenancy/auth.py: how long a replica trusts
TEXT = "word " * 58  # 60 tokens with the model's two special tokens
QUOTA = 100  # one TEXT fits, two do not


def unique_texts(count: int) -> list[str]:
    return [f"what the old owner embedded {secrets.token_hex(8)}" for _ in range(count)]


def embed(url: str, key: str, texts: list[str]) -> httpx.Response:
    body = {"model": "all-minilm-l6-v2", "input": texts}
    return httpx.post(f"{url}/v1/embeddings", json=body, headers=bearer(key), timeout=60)


def cache_hits(url: str) -> int:
    """Inputs the server answered from its embedding cache since it started."""
    system = httpx.get(f"{url}/admin/system", headers=ADMIN, timeout=30)
    assert system.status_code == 200, system.text
    return int(system.json()["cache"]["hits"])


def usage(url: str, key: str) -> dict[str, Any]:
    me = httpx.get(f"{url}/v1/me", headers=bearer(key), timeout=30)
    assert me.status_code == 200, me.text
    return dict(me.json()["usage"])


def fresh_caches(url: str, key: str) -> float:
    """Let the server's cached key and tenant records expire, then have it read them again
    (fresh for KEY_CACHE_SECONDS from now, the window a delete elsewhere leaves); when."""
    time.sleep(KEY_CACHE_SECONDS + 0.2)
    warmed = time.monotonic()
    assert httpx.get(f"{url}/v1/models", headers=bearer(key), timeout=30).status_code == 200
    return warmed


def write_zombie(url: str, key: str, warmed: float | None = None) -> tuple[int, int]:
    """A new collection, and a document in the existing "docs": the statuses of both
    writes (each reaches the store's write, where the tenant is checked). With
    ``warmed``: both are sent inside the window that ``fresh_caches`` opened."""
    if warmed is not None:
        assert time.monotonic() - warmed < KEY_CACHE_SECONDS, "too slow to test the window"
    made = httpx.post(f"{url}/v1/collections", json={"name": "zombie"}, headers=bearer(key),
                      timeout=60)  # fmt: skip
    doc = {"documents": [{"id": "z1", "text": "the old owner's secret"}]}
    if warmed is not None:
        assert time.monotonic() - warmed < KEY_CACHE_SECONDS, "too slow to test the window"
    written = httpx.post(f"{url}/v1/collections/docs/documents", json=doc,
                         headers=bearer(key), timeout=60)  # fmt: skip
    return made.status_code, written.status_code


def assert_nothing_visible(url: str, key: str) -> None:
    listed = httpx.get(f"{url}/v1/collections", headers=bearer(key), timeout=30)
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []
    for path in ("/v1/collections/zombie", "/v1/collections/docs/documents/d1",
                 "/v1/collections/docs/documents/z1"):  # fmt: skip
        found = httpx.get(f"{url}{path}", headers=bearer(key), timeout=30)
        assert found.status_code == 404, found.text


def recreate(url: str, tenant: str, policy: dict[str, Any] | None = None) -> str:
    return make_tenant(url, tenant, policy=policy)


# SQLite + embedded store, one server


def test_the_old_key_fails_at_once_on_the_deleting_server(server: ServerProcess) -> None:
    key = make_tenant(server.url, "reuse-key")
    assert embed(server.url, key, ["warm the key cache"]).status_code == 200
    delete_tenant(server.url, "reuse-key")
    refused = httpx.get(f"{server.url}/v1/models", headers=bearer(key), timeout=30)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert write_zombie(server.url, key) == (401, 401)


def test_a_recreated_tenant_sees_nothing_written_in_the_window(server: ServerProcess) -> None:
    tenant = "reuse-zombie"
    key = make_tenant(server.url, tenant)
    assert httpx.post(f"{server.url}/v1/collections", json={"name": "docs"},
                      headers=bearer(key), timeout=60).status_code == 201  # fmt: skip
    doc = {"documents": [{"id": "d1", "text": "before the delete"}]}
    assert httpx.post(f"{server.url}/v1/collections/docs/documents", json=doc,
                      headers=bearer(key), timeout=60).status_code == 200  # fmt: skip
    warmed = fresh_caches(server.url, key)
    delete_tenant(server.url, tenant)
    assert write_zombie(server.url, key, warmed) == (401, 401)
    fresh = recreate(server.url, tenant)
    assert_nothing_visible(server.url, fresh)


def test_a_recreated_tenant_inherits_no_embedding_cache(server: ServerProcess) -> None:
    tenant, texts = "reuse-cache", unique_texts(8)
    key = make_tenant(server.url, tenant)
    assert embed(server.url, key, texts).status_code == 200
    before = cache_hits(server.url)
    assert embed(server.url, key, texts).status_code == 200
    assert cache_hits(server.url) == before + len(texts)  # the cache works: a control
    delete_tenant(server.url, tenant)
    fresh = recreate(server.url, tenant)
    before = cache_hits(server.url)
    assert embed(server.url, fresh, texts).status_code == 200
    assert cache_hits(server.url) == before  # not one of the old owner's entries answered


def test_a_recreated_tenant_starts_with_no_usage_and_its_whole_quota(
    tmp_path: Path,
) -> None:
    tenant, policy = "reuse-quota", {"monthly_token_quota": QUOTA}
    with serve(tmp_path / "data") as server:
        key = make_tenant(server.url, tenant, policy=policy)
        first = embed(server.url, key, [TEXT])
        assert first.status_code == 200, first.text
        tokens = first.json()["usage"]["prompt_tokens"]
        assert tokens <= QUOTA < 2 * tokens  # the test's premise
        spent = embed(server.url, key, [TEXT])
        assert spent.status_code == 429, spent.text
        assert spent.json()["error"]["code"] == "insufficient_quota"
        assert usage(server.url, key)["tokens"] == tokens
        delete_tenant(server.url, tenant)
        fresh = recreate(server.url, tenant, policy)
        seen = usage(server.url, fresh)
        assert (seen["requests"], seen["tokens"], seen["quota_remaining"]) == (0, 0, QUOTA)
        again = embed(server.url, fresh, [TEXT])
        assert again.status_code == 200, again.text
        # billing by tenant id still sees both incarnations' tokens
        assert usage_of_id(server.url, tenant) == 2 * tokens


# PostgreSQL (state) + pgvector (documents) + Redis (limits), two replicas


@contextlib.contextmanager
def two_replicas(tmp_path: Path, database: str, prefix: str, vectors: str
                 ) -> Iterator[tuple[ServerProcess, ServerProcess]]:  # fmt: skip
    env = replica_env(database, prefix, EMBEDGATE_VECTOR_URL=vectors)
    with (
        start_server(tmp_path / "replica-a", env=env) as first,
        start_server(tmp_path / "replica-b", env=env) as second,
    ):
        yield first, second


def test_two_replicas_a_delete_on_one_stops_writes_on_the_other(
    tmp_path: Path, postgres_url: str, redis_prefix: str, pgvector_url: str,  # noqa: F811
) -> None:  # fmt: skip
    tenant = f"reuse-{secrets.token_hex(4)}"
    policy = {"monthly_token_quota": 2 * QUOTA}
    texts = unique_texts(6)
    with two_replicas(tmp_path, postgres_url, redis_prefix, pgvector_url) as (a, b):
        key = make_tenant(a.url, tenant, policy=policy)
        assert httpx.post(f"{b.url}/v1/collections", json={"name": "docs"},
                          headers=bearer(key), timeout=60).status_code == 201  # fmt: skip
        doc = {"documents": [{"id": "d1", "text": "before the delete"}]}
        assert httpx.post(f"{b.url}/v1/collections/docs/documents", json=doc,
                          headers=bearer(key), timeout=60).status_code == 200  # fmt: skip
        assert embed(b.url, key, [TEXT]).status_code == 200
        warm = embed(b.url, key, texts)  # B caches these vectors
        assert warm.status_code == 200, warm.text
        warmed = fresh_caches(b.url, key)
        delete_tenant(a.url, tenant)
        # B still trusts the key: the store's check inside the write refuses the new
        # collection; "docs" is gone already, so the document finds no collection (404)
        made, written = write_zombie(b.url, key, warmed)
        assert (made, written in (401, 404)) == (401, True), (made, written)
        assert write_zombie(a.url, key) == (401, 401)  # A forgot the key at once
        old_tokens = usage_of_id(a.url, tenant)
        fresh = recreate(a.url, tenant, policy)
        for replica in (a, b):
            assert_nothing_visible(replica.url, fresh)
            seen = usage(replica.url, fresh)
            assert (seen["tokens"], seen["quota_remaining"]) == (0, 2 * QUOTA)
        first = embed(b.url, fresh, [TEXT])  # over the quota, were the old count its own
        assert first.status_code == 200, first.text
        cost, rest = first.json()["usage"]["prompt_tokens"], warm.json()["usage"]["prompt_tokens"]
        assert old_tokens + cost > 2 * QUOTA >= cost + rest  # the test's premise
        before = cache_hits(b.url)
        assert embed(b.url, fresh, texts).status_code == 200
        assert cache_hits(b.url) == before  # B's cache held the old uid's vectors only


def usage_of_id(url: str, tenant: str) -> int:
    """Tokens billed to a tenant id this month, every incarnation of it together."""
    report = httpx.get(f"{url}/admin/usage", params={"tenant": tenant}, headers=ADMIN,
                       timeout=30)  # fmt: skip
    assert report.status_code == 200, report.text
    return sum(int(row["tokens"]) for row in report.json()["data"])
