"""Limits on the machine's Redis: shared by apps, and the failure modes when it is down."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY, REDIS_URL, AppClient
from tests.docstore.pg_fixtures import pg_server, pg_superuser_url, pgvector_url  # noqa: F401

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
pytestmark = pytest.mark.anyio
DEAD_REDIS = "redis://127.0.0.1:1/0"


async def test_apps_on_one_redis_share_rpm_and_quota(
    postgres_url: str,
    pgvector_url: str,  # noqa: F811
    app_factory: Any,
    redis_prefix: str,
) -> None:  # the databases first: the apps are shut down before they are dropped
    plans = {"default": {"rpm": 6, "monthly_token_quota": 1000}}
    settings = {"warmup": False, "plans": plans, "redis_url": REDIS_URL,
                "redis_key_prefix": redis_prefix, "database_url": postgres_url,
                "vector_url": pgvector_url,
                "secret_key": "replicas-share-this-secret-" + "x" * 32}  # fmt: skip
    # Two replicas: one database (one tenant, one uid), one Redis.
    apps: list[AppClient] = [await app_factory(**settings) for _ in range(2)]
    responses = await asyncio.gather(*(
        apps[i % 2].http.post("/v1/embeddings", json={"input": f"text {i}"}) for i in range(12)
    ))  # fmt: skip
    statuses = [r.status_code for r in responses]
    assert 6 <= statuses.count(200) <= 7, statuses
    assert statuses.count(429) >= 5, statuses
    health = (await apps[0].http.get("/health", headers=ADMIN)).json()
    assert health["status"] == "ok"
    assert health["rate_limits"] == {"backend": "redis", "ready": True, "failure_mode": "open"}


async def test_fail_open_serves_without_limits_and_says_so(
    app_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = await app_factory(warmup=False, plans={"default": {"rpm": 1}}, redis_url=DEAD_REDIS)
    with caplog.at_level(logging.ERROR, logger="embedgate.limits"):
        statuses = [
            (await app.http.post("/v1/embeddings", json={"input": "x"})).status_code
            for _ in range(3)
        ]
    assert statuses == [200, 200, 200]  # rpm 1 not enforced: fail-open
    assert any("unreachable" in r.message and "failing open" in r.message for r in caplog.records)
    health = await app.http.get("/health", headers=ADMIN)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["rate_limits"] == {
        "backend": "redis", "ready": False, "failure_mode": "open",
    }  # fmt: skip


async def test_fail_closed_refuses_with_503(app_factory: Any) -> None:
    app = await app_factory(warmup=False, plans={"default": {"rpm": 100}}, redis_url=DEAD_REDIS,
                            rate_limit_failure_mode="closed")  # fmt: skip
    response = await app.http.post("/v1/embeddings", json={"input": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    assert response.headers["retry-after"] == "1"
    health = await app.http.get("/health", headers=ADMIN)
    assert health.status_code == 503
    assert health.json()["rate_limits"]["ready"] is False
    # Every tenant route takes a request from rpm: none is admitted unchecked.
    for me in (await app.http.get("/v1/me"), await app.http.get("/v1/collections")):
        assert me.status_code == 503
        assert me.json()["error"]["code"] == "rate_limiter_unavailable"
        assert "x-ratelimit-limit-requests" not in me.headers


async def test_on_redis_every_route_counts_and_a_spent_quota_refuses_first(
    app_factory: Any, redis_prefix: str
) -> None:
    plans = {"default": {"rpm": 4, "tpm": 1000, "monthly_token_quota": 0}}
    app = await app_factory(warmup=False, plans=plans, redis_url=REDIS_URL,
                            redis_key_prefix=redis_prefix)  # fmt: skip
    refused = await app.http.post("/v1/embeddings", json={"input": "x"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"  # and cost no request
    answers = [await app.http.get(path) for path in ("/v1/me", "/v1/models", "/v1/collections")]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in answers] == ["3", "2", "1"]
    assert (await app.http.get("/v1/me")).headers["x-ratelimit-remaining-tokens"] == "1000"
    assert (await app.http.get("/v1/me")).status_code == 429  # rpm spent on every route
