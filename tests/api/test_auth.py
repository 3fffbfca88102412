"""Auth on /v1: only a live tenant key gets in, and it only ever speaks for its own tenant."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from embedgate.keyfiles import random_base62
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
V1_ROUTES = [
    ("POST", "/v1/embeddings", {"input": "hello"}),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/all-minilm-l6-v2", None),
    ("GET", "/v1/me", None),
]


@pytest.fixture
async def app(app_factory: Any) -> AppClient:
    created: AppClient = await app_factory(
        warmup=False, plans={"default": {"rpm": 100, "max_dimensions": 384}}
    )
    return created


async def call(app: AppClient, method: str, path: str, body: Any, auth: str | None,
               **headers: str) -> httpx.Response:  # fmt: skip
    sent = {"Authorization": auth} if auth is not None else {}
    transport = httpx.ASGITransport(app=app.app)
    client = httpx.AsyncClient(transport=transport, base_url="http://embedgate.test")
    async with client:
        return await client.request(method, path, json=body, headers={**sent, **headers})


async def new_key(app: AppClient, tenant_id: str, **body: Any) -> dict[str, Any]:
    await app.http.post("/admin/tenants", json={"id": tenant_id}, headers=ADMIN)
    response = await app.http.post(f"/admin/tenants/{tenant_id}/keys", json=body, headers=ADMIN)
    return dict(response.json())


async def test_bad_credentials_get_exactly_the_invalid_key_body(app: AppClient) -> None:
    revoked = await new_key(app, "gone")
    await app.http.delete(f"/admin/tenants/gone/keys/{revoked['id']}", headers=ADMIN)
    attempts = [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {app.key}",
        f"Bearer {app.key[:-1]}",  # truncated
        f"Bearer {app.key}x",
        f"Bearer tenant_test-tenant_{random_base62(43)}",  # forged
        f"Bearer tenant_1001_{app.key.split('_')[-1]}",  # real secret, other tenant id
        f"Bearer {revoked['key']}",
        f"Bearer {ADMIN_KEY}",  # the admin key is not a tenant key
        "Bearer sk-proj-" + "x" * 40,
    ]
    for method, path, body in V1_ROUTES:
        for auth in attempts:
            response = await call(app, method, path, body, auth)
            assert response.status_code == 401, (path, auth)
            assert response.json() == INVALID_KEY_BODY


async def test_the_401_body_is_byte_for_byte_the_design(app: AppClient) -> None:
    response = await call(app, "GET", "/v1/me", None, None)
    assert response.content == (
        b'{"error":{"message":"Invalid API key","type":"invalid_request_error",'
        b'"param":null,"code":"invalid_api_key"}}'
    )


async def test_expired_keys_fail(app: AppClient) -> None:
    key = await new_key(app, "brief", expires_in=1)
    assert (await call(app, "GET", "/v1/me", None, f"Bearer {key['key']}")).status_code == 200
    await asyncio.sleep(1.1)
    assert (await call(app, "GET", "/v1/me", None, f"Bearer {key['key']}")).status_code == 401


async def test_tenant_keys_never_reach_admin_routes(app: AppClient) -> None:
    for path in ("/admin/tenants", "/admin/audit", "/admin/tenants/test-tenant/keys"):
        response = await app.http.get(path)  # with the tenant's own key
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY
    assert (await app.http.get("/metrics")).status_code == 401


async def test_me_is_the_keys_tenant_whatever_headers_say(app: AppClient) -> None:
    other = await new_key(app, "1001")
    spoofed = await call(
        app, "GET", "/v1/me", None, f"Bearer {other['key']}",
        **{"X-Tenant-ID": "test-tenant", "X-Tenant-Plan": "premium"},
    )  # fmt: skip
    me = spoofed.json()
    assert (me["id"], me["plan"]) == ("1001", "default")
    assert me["policy"] == {"rpm": 100, "max_dimensions": 384}  # the plan's defaults
    assert me["key"]["prefix"] == other["prefix"]
    no_key = await call(app, "GET", "/v1/me", None, None, **{"X-Tenant-ID": "1001"})
    assert no_key.status_code == 401


async def test_tenant_policy_overrides_the_plan(app: AppClient) -> None:
    await app.http.patch("/admin/tenants/test-tenant", json={"policy": {"rpm": 5}},
                         headers=ADMIN)  # fmt: skip
    await asyncio.sleep(2.1)  # the tenant record is cached for up to 2 s
    me = (await app.http.get("/v1/me")).json()
    assert me["policy"] == {"rpm": 5, "max_dimensions": 384}


async def test_suspended_tenants_and_missing_scopes_get_403(app: AppClient) -> None:
    reader = await new_key(app, "reader", scopes=["search:read"])
    denied = await call(app, "POST", "/v1/embeddings", {"input": "x"}, f"Bearer {reader['key']}")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    assert (await call(app, "GET", "/v1/me", None, f"Bearer {reader['key']}")).status_code == 200
    await app.http.patch("/admin/tenants/reader", json={"status": "suspended"}, headers=ADMIN)
    await asyncio.sleep(2.1)
    suspended = await call(app, "GET", "/v1/me", None, f"Bearer {reader['key']}")
    assert suspended.status_code == 403
    assert "suspended" in suspended.json()["error"]["message"]


async def test_revocation_bites_within_five_seconds(app: AppClient) -> None:
    key = await new_key(app, "revoked")
    auth = f"Bearer {key['key']}"
    assert (await call(app, "GET", "/v1/me", None, auth)).status_code == 200
    await app.http.delete(f"/admin/tenants/revoked/keys/{key['id']}", headers=ADMIN)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (await call(app, "GET", "/v1/me", None, auth)).status_code == 200:
        assert loop.time() - started < 5
        await asyncio.sleep(0.1)


async def test_auth_failures_are_audited_with_prefix_and_address_and_throttled(
    app: AppClient,
) -> None:
    forged = f"tenant_1001_{random_base62(43)}"
    for _ in range(5):
        await call(app, "GET", "/v1/me", None, f"Bearer {forged}")
    await call(app, "GET", "/admin/tenants", None, "Bearer admin_guess")
    events = (await app.http.get("/admin/audit", params={"event": "auth.failed"},
                                 headers=ADMIN)).json()["data"]  # fmt: skip
    assert len(events) == 1  # one entry per address per 10 s; the rest are counted
    assert events[0]["key_prefix"] == forged[: len("tenant_1001_") + 4]
    assert events[0]["client_ip"]
    assert forged not in str(events)


PROXY_SECRET = "gateway-shared-secret-0123456789"


async def test_trusted_proxy_may_name_the_tenant(app_factory: Any) -> None:
    app: AppClient = await app_factory(
        warmup=False, trusted_proxy_secret=PROXY_SECRET, trusted_proxy_networks="127.0.0.0/8"
    )
    transport = httpx.ASGITransport(app=app.app, client=("127.0.0.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as gateway:
        ok = await gateway.get("/v1/me", headers={"X-Embedgate-Proxy-Secret": PROXY_SECRET,
                                                 "X-Tenant-ID": "test-tenant"})  # fmt: skip
        assert ok.status_code == 200
        assert ok.json()["id"] == "test-tenant"
        embed = await gateway.post(
            "/v1/embeddings", json={"input": "hi"},
            headers={"X-Embedgate-Proxy-Secret": PROXY_SECRET, "X-Tenant-ID": "test-tenant"},
        )  # fmt: skip
        assert embed.status_code == 200
        for headers in (
            {"X-Embedgate-Proxy-Secret": "wrong", "X-Tenant-ID": "test-tenant"},
            {"X-Embedgate-Proxy-Secret": PROXY_SECRET, "X-Tenant-ID": "nobody"},
            {"X-Embedgate-Proxy-Secret": PROXY_SECRET},
        ):
            refused = await gateway.get("/v1/me", headers=headers)
            assert refused.status_code == 401
            assert refused.json() == INVALID_KEY_BODY
    outside = httpx.ASGITransport(app=app.app, client=("10.1.2.3", 4000))
    async with httpx.AsyncClient(transport=outside, base_url="http://t") as stranger:
        right_secret_wrong_network = await stranger.get(
            "/v1/me",
            headers={"X-Embedgate-Proxy-Secret": PROXY_SECRET, "X-Tenant-ID": "test-tenant"},
        )
        assert right_secret_wrong_network.status_code == 401


async def test_without_proxy_mode_the_proxy_headers_open_nothing(app: AppClient) -> None:
    response = await call(
        app, "GET", "/v1/me", None, None,
        **{"X-Embedgate-Proxy-Secret": "anything", "X-Tenant-ID": "test-tenant"},
    )  # fmt: skip
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), V1_ROUTES)
async def test_a_missing_and_a_wrong_key_say_which_in_the_challenge(
    app: AppClient, method: str, path: str, body: Any
) -> None:
    """Issue 17: the body stays the contract's, byte for byte; RFC 6750's WWW-Authenticate
    says whether a key was sent at all (never whether it was unknown, revoked or expired)."""
    missing = await call(app, method, path, body, None)
    wrong = await call(app, method, path, body, f"Bearer tenant_acme_{random_base62(43)}")
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY
    assert missing.headers["www-authenticate"] == 'Bearer realm="embedgate"'
    assert wrong.headers["www-authenticate"] == (
        'Bearer realm="embedgate", error="invalid_token", '
        'error_description="the key sent is not a valid key"'
    )
