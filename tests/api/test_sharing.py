"""Dedicated models, the per-tenant embedding cache, denial audit and per-tenant metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from embedgate.config.models import BUNDLED_MINILM
from tests.conftest import ADMIN_KEY, AppClient

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def second_tenant(app: AppClient, tenant_id: str) -> httpx.AsyncClient:
    await app.http.post("/admin/tenants", json={"id": tenant_id}, headers=ADMIN)
    created = await app.http.post(f"/admin/tenants/{tenant_id}/keys", json={}, headers=ADMIN)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.app), base_url="http://embedgate.test",
        headers={"Authorization": f"Bearer {created.json()['key']}"},
    )  # fmt: skip


async def metric(app: AppClient, line_start: str) -> float:
    text = (await app.http.get("/metrics", headers=ADMIN)).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(line_start)]  # fmt: skip
    return sum(values)


async def test_a_dedicated_model_is_invisible_to_other_tenants(app_factory: Any) -> None:
    models = {
        "all-minilm-l6-v2": {"backend": "local", "path": BUNDLED_MINILM},
        "acme-tuned": {"backend": "local", "path": BUNDLED_MINILM, "tenants": ["acme"]},
    }
    app = await app_factory(warmup=False, models=models)
    acme = await second_tenant(app, "acme")
    async with acme:
        listed = [m["id"] for m in (await acme.get("/v1/models")).json()["data"]]
        assert listed == ["all-minilm-l6-v2", "acme-tuned"]
        ok = await acme.post("/v1/embeddings", json={"input": "x", "model": "acme-tuned"})
        assert ok.status_code == 200
        assert ok.json()["model"] == "acme-tuned"
    other = app.http  # test-tenant
    assert [m["id"] for m in (await other.get("/v1/models")).json()["data"]] == ["all-minilm-l6-v2"]
    for response in (
        await other.post("/v1/embeddings", json={"input": "x", "model": "acme-tuned"}),
        await other.get("/v1/models/acme-tuned"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
    health = (await other.get("/health")).json()
    assert "acme-tuned" not in str(health)
    assert health["reserved_models"] == {"count": 1, "ready": 1}


async def test_the_cache_answers_repeats_per_tenant_only(app_factory: Any) -> None:
    app = await app_factory(warmup=False)
    texts = ["the cached sentence", "another one"]
    first = await app.http.post("/v1/embeddings", json={"input": texts})
    assert await metric(app, "embedgate_embedding_cache_hits_total") == 0
    again = await app.http.post("/v1/embeddings", json={"input": texts, "dimensions": 64})
    assert await metric(app, "embedgate_embedding_cache_hits_total") == 2
    full = [d["embedding"] for d in first.json()["data"]]
    short = [d["embedding"] for d in again.json()["data"]]
    assert len(short[0]) == 64
    assert short[0][:5] != full[0][:5]  # renormalised prefix of the same vector
    assert again.json()["usage"] == first.json()["usage"]  # billed like any request
    other = await second_tenant(app, "other-co")
    async with other:
        theirs = await other.post("/v1/embeddings", json={"input": texts})
    assert await metric(app, "embedgate_embedding_cache_hits_total") == 2  # no cross-tenant hit
    assert theirs.json()["data"][0]["embedding"] == full[0]
    assert await metric(app, "embedgate_embedding_cache_hit_ratio") == pytest.approx(2 / 6)


async def test_the_cache_can_be_switched_off(app_factory: Any) -> None:
    app = await app_factory(warmup=False, embedding_cache_mb=0)
    for _ in range(2):
        await app.http.post("/v1/embeddings", json={"input": "same"})
    assert await metric(app, "embedgate_embedding_cache_hits_total") == 0


async def test_denials_are_audited_without_content_and_counted(app_factory: Any) -> None:
    plans = {"default": {"rpm": 2, "blocked_terms": ["secret plan"]}}  # the 403 counts too
    app = await app_factory(warmup=False, plans=plans)
    blocked = await app.http.post("/v1/embeddings", json={"input": "the SECRET plan"})
    assert blocked.status_code == 403
    await app.http.post("/v1/embeddings", json={"input": "fine"})
    for _ in range(3):
        limited = await app.http.post("/v1/embeddings", json={"input": "fine"})
    assert limited.status_code == 429
    await app.app.state.runtime.denials.drain()
    events = (await app.http.get("/admin/audit?tenant=test-tenant", headers=ADMIN)).json()["data"]
    denials = {e["event"]: e for e in events if e["event"] in ("policy.denied", "limit.exceeded")}
    assert denials["policy.denied"]["detail"]["code"] == "content_blocked"
    assert denials["limit.exceeded"]["detail"]["code"] == "rate_limit_exceeded"
    assert "secret" not in str(events).lower()
    # three 429s in a row: one audit entry, the rest counted, not written
    assert [e["event"] for e in events].count("limit.exceeded") == 1
    assert (
        await metric(
            app, 'embedgate_tenant_denials_total{code="rate_limit_exceeded",tenant="test-tenant"}'
        )
        == 3
    )
    assert (
        await metric(app, 'embedgate_tenant_requests_total{status="200",tenant="test-tenant"}') == 1
    )


async def test_per_tenant_series_are_bounded(app_factory: Any) -> None:
    app = await app_factory(warmup=False, metrics_tenant_labels=1)
    await app.http.post("/v1/embeddings", json={"input": "x"})
    for name in ("b-co", "c-co"):
        client = await second_tenant(app, name)
        async with client:
            await client.post("/v1/embeddings", json={"input": "x"})
    text = (await app.http.get("/metrics", headers=ADMIN)).text
    assert 'tenant="test-tenant"' in text
    assert 'tenant="b-co"' not in text
    assert 'tenant="c-co"' not in text
    assert await metric(app, 'embedgate_tenant_requests_total{status="200",tenant="_other"}') == 2
    assert await metric(app, 'embedgate_tenant_tokens_total{tenant="_other"}') > 0


async def test_refusals_at_authentication_are_metered_and_audited(app_factory: Any) -> None:
    app = await app_factory(warmup=False, plans={"default": {"ip_allowlist": ["10.0.0.0/8"]}})
    refused = await app.http.post("/v1/embeddings", json={"input": "x"})
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    await app.app.state.runtime.denials.drain()
    events = (await app.http.get("/admin/audit?event=policy.denied", headers=ADMIN)).json()
    assert [e["detail"]["code"] for e in events["data"]] == ["ip_not_allowed"]
    usage = await app.http.get("/admin/usage?tenant=test-tenant", headers=ADMIN)
    [bucket] = usage.json()["data"]
    assert (bucket["requests"], bucket["errors"], bucket["tokens"]) == (1, 1, 0)
