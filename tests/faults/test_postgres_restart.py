"""PostgreSQL restarted under load: clean 503s while it is away, and recovery without
restarting embedgate, for the state store (SQLAlchemy) and the pgvector store (psycopg)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from embedgate.docstore.pgvector.store import POOL_TIMEOUT_S
from tests.conftest import ADMIN_KEY, TEST_TENANT, issue_key
from tests.faults.helpers import Call, FakeEngine, Load, PrivatePostgres, engine_config
from tests.helpers import start_server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# The slowest answer allowed while the database is away: a pooled connection is waited
# for at most POOL_TIMEOUT_S; the rest is margin for a loaded test machine.
BOUND_S = POOL_TIMEOUT_S + 5.0
OUTAGE_S = POOL_TIMEOUT_S + 1.0  # so that the pgvector store's waits run out inside it
ENV = {
    "EMBEDGATE_ADMIN_KEY": ADMIN_KEY,
    "EMBEDGATE_SECRET_KEY": "faults-secret-" + "x" * 32,
    "EMBEDGATE_WARMUP": "false",
}
RECOVERY_S = 10.0  # from PostgreSQL accepting connections to every route answering again


def test_requests_fail_cleanly_and_recover_after_a_restart(
    tmp_path: Path, postgres: PrivatePostgres, engine: FakeEngine
) -> None:
    config = engine_config(tmp_path / "embedgate.yaml", engine.url)
    env = {**ENV, "EMBEDGATE_DATABASE_URL": postgres.url, "EMBEDGATE_CONFIG": str(config)}
    with start_server(tmp_path / "data", env=env) as server:
        base, tenant = server.url, {"Authorization": f"Bearer {issue_key(server.url)}"}
        created = httpx.post(f"{base}/v1/collections", json={"name": "kb"}, headers=tenant)
        assert created.status_code == 201, created.text
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert httpx.get(f"{base}/health", headers=admin).json()["search"]["backend"] == "pgvector"
        calls, written = _calls(base, tenant)
        with Load(calls, threads=3) as load:
            time.sleep(1.5)
            down = time.monotonic()
            postgres.stop("fast")
            time.sleep(OUTAGE_S / 2)
            health = httpx.get(f"{base}/health", headers=admin, timeout=BOUND_S)
            time.sleep(OUTAGE_S / 2)
            postgres.start()
            up = time.monotonic()
            recovered = _served_again(calls, deadline=up + RECOVERY_S)
            time.sleep(2.0)
        assert server.process.poll() is None  # the same process throughout

        _assert_clean(load.outcomes)
        refused = {o.op for o in load.between(down, up) if o.status == 503}
        assert {"me", "admin"} <= refused, refused  # the state store
        assert refused & {"search", "upsert"}, refused  # the pgvector store
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unavailable"
        assert body["database"] == {"backend": "postgresql", "ready": False}
        assert body["search"]["ready"] is False

        assert recovered - up < RECOVERY_S
        after = load.between(recovered)
        assert after, "no load after recovery"
        assert all(o.status < 300 for o in after), _summary(after)
        health = httpx.get(f"{base}/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"
        assert set(written) <= _stored_ids(base, tenant)  # every acknowledged write is there
        served = sum(o.status < 300 for o in load.outcomes if o.op != "admin")
        assert _metered_successes(base) >= served  # usage answered meanwhile was kept


def _calls(base: str, tenant: dict[str, str]) -> tuple[dict[str, Call], list[str]]:
    """Embeddings, /v1/me, the admin API, hybrid search and upserts; the ids of upserts
    that were acknowledged."""
    written: list[str] = []
    numbers = itertools.count()

    def upsert(client: httpx.Client) -> httpx.Response:
        doc_id = f"load-{next(numbers)}"
        doc = {"id": doc_id, "text": f"a note about cats, number {doc_id}"}
        response = client.post(f"{base}/v1/collections/kb/documents",
                               json={"documents": [doc]}, headers=tenant)  # fmt: skip
        if response.status_code == 200:
            written.append(doc_id)
        return response

    embed = {"input": ["load"]}
    search = {"query": "cats", "mode": "hybrid", "top_k": 3}
    calls: dict[str, Call] = {
        "embeddings": lambda c: c.post(f"{base}/v1/embeddings", json=embed, headers=tenant),
        "me": lambda c: c.get(f"{base}/v1/me", headers=tenant),
        "admin": lambda c: c.get(f"{base}/admin/tenants", headers=ADMIN),
        "search": lambda c: c.post(f"{base}/v1/collections/kb/search", json=search, headers=tenant),
        "upsert": upsert,
    }
    return calls, written


def _served_again(calls: dict[str, Call], deadline: float) -> float:
    """When every route answered 2xx in one round, polling until ``deadline``."""
    with httpx.Client(timeout=BOUND_S) as client:
        while time.monotonic() < deadline:
            if all(call(client).status_code < 300 for call in calls.values()):
                return time.monotonic()
            time.sleep(0.2)
    raise AssertionError(f"not recovered {RECOVERY_S}s after PostgreSQL was back")


def _assert_clean(outcomes: list[Any]) -> None:
    """Success, or 503 database_unavailable in the OpenAI envelope; never a 500, a dropped
    connection or an answer slower than BOUND_S."""
    clean = {(503, "database_unavailable")}
    bad = [o for o in outcomes if o.status >= 300 and (o.status, o.code) not in clean]
    assert not bad, _summary(bad)
    slowest = max(o.elapsed for o in outcomes)
    assert slowest < BOUND_S, f"a request took {slowest:.1f}s"


def _stored_ids(base: str, tenant: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = httpx.get(f"{base}/v1/collections/kb/documents", params=params, headers=tenant)
        body = page.json()
        ids |= {d["id"] for d in body["data"]}
        if not body["has_more"]:
            return ids
        params["after"] = body["next_after"]


def _metered_successes(base: str) -> int:
    report = httpx.get(f"{base}/admin/usage", params={"tenant": TEST_TENANT}, headers=ADMIN)
    assert report.status_code == 200, report.text
    return sum(row["requests"] - row["errors"] for row in report.json()["data"])


def _summary(outcomes: list[Any]) -> str:
    counts: dict[tuple[str, int, str | None], int] = {}
    for o in outcomes:
        counts[(o.op, o.status, o.code)] = counts.get((o.op, o.status, o.code), 0) + 1
    return repr(counts)
