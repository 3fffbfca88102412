"""Web console sessions: a key is exchanged for an HttpOnly cookie that stands for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from embedgate.storage.schema import metadata
from embedgate.tenancy.sessions import ConsoleSessions
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, TEST_TENANT, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
COOKIE = "embedgate_session"


@pytest.fixture
async def app(app_factory: Any) -> AppClient:
    created: AppClient = await app_factory(warmup=False)
    return created


@asynccontextmanager
async def browser(
    app: AppClient, base_url: str = "http://embedgate.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar and no Authorization header, as a browser would be."""
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


async def login(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    response = await client.post("/console/login", json={"key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def new_key(app: AppClient, tenant_id: str, **body: Any) -> dict[str, Any]:
    await app.http.post("/admin/tenants", json={"id": tenant_id}, headers=ADMIN)
    response = await app.http.post(f"/admin/tenants/{tenant_id}/keys", json=body, headers=ADMIN)
    return dict(response.json())


def cookie_attributes(response: httpx.Response) -> dict[str, str]:
    header = response.headers["set-cookie"]
    name_value, *attributes = (part.strip() for part in header.split(";"))
    parsed = dict(a.partition("=")[::2] for a in attributes)
    return {"cookie": name_value} | {k.lower(): v for k, v in parsed.items()}


async def test_a_tenant_key_opens_a_tenant_session_in_a_locked_down_cookie(
    app: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with browser(app) as client:
        response = await client.post("/console/login", json={"key": app.key})
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"kind", "tenant_id", "key_prefix", "scopes", "csrf_token",
                             "expires_at"}  # fmt: skip
        assert body["kind"] == "tenant"
        assert body["tenant_id"] == TEST_TENANT
        assert app.key.startswith(body["key_prefix"])
        assert body["scopes"] == ["embeddings", "search:read", "search:write"]
        assert body["expires_at"].endswith("Z")
        cookie = cookie_attributes(response)
        token = cookie["cookie"].removeprefix(f"{COOKIE}=")
        assert len(token) >= 43
        assert token not in response.text
        assert "httponly" in cookie
        assert "secure" not in cookie
        assert cookie["samesite"].lower() == "strict"
        assert cookie["path"] == "/"
        assert cookie["max-age"] == str(8 * 3600)

        again = await client.get("/console/session")
        assert again.status_code == 200
        assert again.headers["cache-control"] == "no-store"
        assert again.json() == body  # a reloaded page gets its CSRF token back
        me = await client.get("/v1/me")
        assert me.status_code == 200
        assert me.json()["id"] == TEST_TENANT
        assert (await client.get("/v1/collections")).json() == {"object": "list", "data": []}
    audit = (await app.http.get("/admin/audit", params={"event": "console.login"},
                                headers=ADMIN)).json()["data"]  # fmt: skip
    assert audit[0]["actor"] == f"tenant:{TEST_TENANT}"
    assert audit[0]["key_prefix"] == body["key_prefix"]
    assert audit[0]["client_ip"]
    assert audit[0]["detail"] == {"kind": "tenant"}
    for secret in (token, app.key, body["csrf_token"]):
        assert secret not in caplog.text
        assert secret not in str(audit)


async def test_a_session_is_limited_and_metered_as_its_key(app_factory: Any) -> None:
    app = await app_factory(warmup=False, plans={"default": {"rpm": 100}})
    async with browser(app) as client:
        session = await login(client, app.key)
        csrf = {"X-CSRF-Token": session["csrf_token"]}
        embedded = await client.post("/v1/embeddings", json={"input": "hello"}, headers=csrf)
        assert embedded.status_code == 200
        assert embedded.headers["x-ratelimit-limit-requests"]
        usage = (await client.get("/v1/me")).json()["usage"]
    assert usage["requests"] >= 1
    assert usage["tokens"] > 0


async def test_opening_the_console_makes_no_usage_record_but_counts_against_limits(
    app_factory: Any,
) -> None:
    """The console drawing its pages (GET /v1/me, /v1/collections, /v1/models) is not the
    tenant's usage; what it does through the console (an embedding, a search) is."""
    app = await app_factory(warmup=False, plans={"default": {"rpm": 100}})
    async with browser(app) as client:
        session = await login(client, app.key)
        for path in ("/v1/me", "/v1/collections", "/v1/models"):
            page = await client.get(path)
            assert page.status_code == 200, page.text
            assert page.headers["x-ratelimit-limit-requests"] == "100"
        remaining = int(page.headers["x-ratelimit-remaining-requests"])
        assert remaining <= 100 - 3  # each counted against the rate limit
        usage = (await client.get("/v1/me")).json()["usage"]
        assert usage["requests"] == 0
        csrf = {"X-CSRF-Token": session["csrf_token"]}
        assert (await client.post("/v1/embeddings", json={"input": "hi"}, headers=csrf)).is_success
        assert (await client.get("/v1/me")).json()["usage"]["requests"] == 1
    # The same reads with the key itself are API calls, metered as always.
    await app.http.get("/v1/collections")
    assert (await app.http.get("/v1/me")).json()["usage"]["requests"] == 2  # (and /v1/me next)


async def test_the_admin_key_opens_the_admin_view_only(app: AppClient) -> None:
    async with browser(app) as client:
        session = await login(client, ADMIN_KEY)
        assert session["kind"] == "admin"
        assert session["tenant_id"] is None
        assert session["key_prefix"] is None
        assert session["scopes"] is None
        assert (await client.get("/admin/tenants")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/admin/system")).status_code == 200
        created = await client.post("/admin/tenants", json={"id": "acme"},
                                    headers={"X-CSRF-Token": session["csrf_token"]})  # fmt: skip
        assert created.status_code == 201
        refused = await client.post("/admin/tenants", json={"id": "acme2"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        for path in ("/v1/me", "/v1/collections"):  # an admin session is no tenant
            response = await client.get(path)
            assert response.status_code == 401
            assert response.json() == INVALID_KEY_BODY
    audit = (await app.http.get("/admin/audit", params={"event": "console.login"},
                                headers=ADMIN)).json()["data"]  # fmt: skip
    assert audit[0]["actor"] == "admin"
    assert audit[0]["key_prefix"] is None


async def test_bad_keys_and_bad_bodies_are_refused(app: AppClient) -> None:
    async with browser(app) as client:
        for key in ("wrong", app.key + "x", ADMIN_KEY[:-1], f"tenant_{TEST_TENANT}_" + "a" * 43):
            response = await client.post("/console/login", json={"key": key})
            assert response.status_code == 401
            assert response.json() == INVALID_KEY_BODY
            assert response.headers["cache-control"] == "no-store"
            assert "set-cookie" not in response.headers
        form = await client.post("/console/login", data={"key": app.key})
        assert form.status_code == 415
        assert form.json()["error"]["code"] == "unsupported_media_type"
        plain = await client.post("/console/login", content=f'{{"key": "{app.key}"}}',
                                  headers={"Content-Type": "text/plain"})  # fmt: skip
        assert plain.status_code == 415
        for body in ({}, {"key": ""}, {"key": app.key, "extra": 1}, {"key": 1}):
            response = await client.post("/console/login", json=body)
            assert response.status_code == 400, body
        broken = await client.post("/console/login", content=b"{",
                                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert broken.json()["error"]["code"] == "invalid_json"
        anonymous = await client.get("/console/session")  # no cookie: not an error
        assert anonymous.status_code == 200
        assert anonymous.json()["kind"] is None
        assert anonymous.json()["csrf_token"] is None
        assert COOKIE not in client.cookies
    audit = (await app.http.get("/admin/audit", params={"event": "auth.failed"},
                                headers=ADMIN)).json()["data"]  # fmt: skip
    assert audit
    assert audit[0]["actor"] == "anonymous"
    assert app.key not in str(audit)


async def test_unsafe_requests_need_the_csrf_token(app: AppClient) -> None:
    async with browser(app) as client:
        session = await login(client, app.key)
        good = {"X-CSRF-Token": session["csrf_token"]}
        for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": session["csrf_token"][:-1]}):
            response = await client.post("/v1/collections", json={"name": "docs"},
                                         headers=headers)  # fmt: skip
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "csrf_failed"
            assert response.json()["error"]["type"] == "permission_error"
        assert (await client.get("/v1/collections")).json()["data"] == []
        created = await client.post("/v1/collections", json={"name": "docs"}, headers=good)
        assert created.status_code == 201, created.text
        assert (await client.delete("/v1/collections/docs")).status_code == 403
        assert (await client.delete("/v1/collections/docs", headers=good)).status_code in (200, 204)


async def test_a_tenant_session_reaches_neither_admin_nor_other_tenants(app: AppClient) -> None:
    other = await new_key(app, "other")
    other_http = {"Authorization": f"Bearer {other['key']}"}
    created = await app.http.post("/v1/collections", json={"name": "secret"}, headers=other_http)
    assert created.status_code == 201
    async with browser(app) as client:
        session = await login(client, app.key)
        csrf = {"X-CSRF-Token": session["csrf_token"]}
        for method, path in [("GET", "/admin/tenants"), ("GET", "/admin/system"),
                             ("GET", "/metrics"), ("POST", "/admin/tenants")]:  # fmt: skip
            response = await client.request(method, path, json={"id": "x"}, headers=csrf)
            assert response.status_code == 401, path
            assert response.json() == INVALID_KEY_BODY
        missing = await client.get("/v1/collections/secret")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        search = await client.post("/v1/collections/secret/search", json={"query": "x"},
                                   headers=csrf)  # fmt: skip
        assert search.status_code == 404


async def test_an_authorization_header_wins_over_the_cookie(app: AppClient) -> None:
    other = await new_key(app, "other")
    async with browser(app) as client:
        await login(client, app.key)
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {other['key']}"})
        assert me.json()["id"] == "other"
        for auth in ("Bearer wrong", "Basic abc", ""):
            response = await client.get("/v1/me", headers={"Authorization": auth})
            assert response.status_code == 401
        await login(client, ADMIN_KEY)
        refused = await client.get("/admin/tenants", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        # a bearer key needs no CSRF token, cookie or not
        created = await client.post("/v1/collections", json={"name": "docs"},
                                    headers={"Authorization": f"Bearer {app.key}"})  # fmt: skip
        assert created.status_code == 201


async def test_logout_ends_the_session_on_the_server(app: AppClient) -> None:
    async with browser(app) as client:
        session = await login(client, app.key)
        token = client.cookies[COOKIE]
        refused = await client.post("/console/logout")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        response = await client.post("/console/logout",
                                     headers={"X-CSRF-Token": session["csrf_token"]})  # fmt: skip
        assert response.status_code == 204
        assert response.headers["cache-control"] == "no-store"
        cleared = cookie_attributes(response)
        assert cleared["cookie"] in (f"{COOKIE}=", f'{COOKIE}=""')
        assert cleared["max-age"] == "0"
        assert COOKIE not in client.cookies
        assert (await client.post("/console/logout")).status_code == 204  # nothing left to end
    async with browser(app) as stolen:  # the old cookie, replayed
        stolen.cookies.set(COOKIE, token)
        for path in ("/v1/me", "/console/session"):
            response = await stolen.get(path)
            assert response.status_code == 401
            assert response.json() == INVALID_KEY_BODY
    audit = (await app.http.get("/admin/audit", params={"event": "console.logout"},
                                headers=ADMIN)).json()["data"]  # fmt: skip
    assert len(audit) == 1
    assert audit[0]["tenant_id"] == TEST_TENANT


async def test_sessions_expire(app_factory: Any) -> None:
    app = await app_factory(warmup=False, console_session_ttl=1)
    async with browser(app) as client:
        response = await client.post("/console/login", json={"key": app.key})
        assert cookie_attributes(response)["max-age"] == "1"
        token = client.cookies[COOKIE]
        assert (await client.get("/v1/me")).status_code == 200
    await asyncio.sleep(1.1)
    async with browser(app) as client:  # a client that ignores Max-Age
        client.cookies.set(COOKIE, token)
        assert (await client.get("/v1/me")).json() == INVALID_KEY_BODY
        assert (await client.get("/console/session")).status_code == 401
    sessions: ConsoleSessions = app.app.state.runtime.sessions
    assert await sessions.prune() == 0  # the expired one was removed when it was seen


async def test_expired_sessions_are_pruned(app_factory: Any) -> None:
    app = await app_factory(warmup=False, console_session_ttl=1)
    async with browser(app) as client:
        await login(client, app.key)
    await asyncio.sleep(1.1)
    sessions: ConsoleSessions = app.app.state.runtime.sessions
    assert await sessions.prune() == 1


async def test_revoking_the_key_ends_its_sessions_at_once(app: AppClient) -> None:
    key = await new_key(app, "acme")
    async with browser(app) as client:
        await login(client, key["key"])
        assert (await client.get("/v1/me")).status_code == 200
        await app.http.delete(f"/admin/tenants/acme/keys/{key['id']}", headers=ADMIN)
        assert (await client.get("/v1/me")).json() == INVALID_KEY_BODY
        assert (await client.get("/console/session")).json() == INVALID_KEY_BODY
        assert (await client.post("/console/login", json={"key": key["key"]})).status_code == 401


async def test_an_expiring_key_ends_its_sessions(app: AppClient) -> None:
    key = await new_key(app, "acme", expires_in=1)
    async with browser(app) as client:
        await login(client, key["key"])
        await asyncio.sleep(1.1)
        assert (await client.get("/v1/me")).json() == INVALID_KEY_BODY


async def test_suspending_the_tenant_ends_its_sessions(app: AppClient) -> None:
    key = await new_key(app, "acme")
    async with browser(app) as client:
        await login(client, key["key"])
        suspend = {"status": "suspended"}
        await app.http.patch("/admin/tenants/acme", json=suspend, headers=ADMIN)
        denied = await client.get("/v1/me")  # refused as its key would be, and ended
        assert denied.status_code == 403
        assert "suspended" in denied.json()["error"]["message"]
        assert (await client.get("/console/session")).json() == INVALID_KEY_BODY
        await app.http.patch("/admin/tenants/acme", json={"status": "active"}, headers=ADMIN)
        assert (await client.get("/v1/me")).json() == INVALID_KEY_BODY  # not revived
        login_suspended = await app.http.patch("/admin/tenants/acme", json=suspend,
                                               headers=ADMIN)  # fmt: skip
        assert login_suspended.status_code == 200
        refused = await client.post("/console/login", json={"key": key["key"]})
        assert refused.status_code == 403
        assert "set-cookie" not in refused.headers


async def test_a_scoped_key_gives_a_session_with_its_scopes(app: AppClient) -> None:
    key = await new_key(app, "reader", scopes=["search:read"])
    async with browser(app) as client:
        session = await login(client, key["key"])
        assert session["scopes"] == ["search:read"]
        csrf = {"X-CSRF-Token": session["csrf_token"]}
        assert (await client.get("/v1/collections")).status_code == 200
        refused = await client.post("/v1/embeddings", json={"input": "x"}, headers=csrf)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "permission_denied"
        write = await client.post("/v1/collections", json={"name": "d"}, headers=csrf)
        assert write.status_code == 403


async def test_the_key_ip_allowlist_applies_to_login(app: AppClient) -> None:
    await app.http.post("/admin/tenants", json={"id": "walled", "policy": {
        "ip_allowlist": ["10.0.0.0/8"]}}, headers=ADMIN)  # fmt: skip
    key = (await app.http.post("/admin/tenants/walled/keys", json={}, headers=ADMIN)).json()
    async with browser(app) as client:
        response = await client.post("/console/login", json={"key": key["key"]})
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "ip_not_allowed"
        assert "set-cookie" not in response.headers


async def test_the_secure_flag_follows_the_scheme_or_the_setting(app_factory: Any) -> None:
    cases = [("auto", "https", True), ("auto", "http", False), ("always", "http", True),
             ("never", "https", False)]  # fmt: skip
    for mode, scheme, secure in cases:
        app = await app_factory(warmup=False, console_secure_cookie=mode)
        async with browser(app, f"{scheme}://embedgate.test") as client:
            response = await client.post("/console/login", json={"key": app.key})
            assert ("secure" in cookie_attributes(response)) is secure, (mode, scheme)


async def test_session_tokens_are_never_stored(app: AppClient) -> None:
    async with browser(app) as client:
        tenant = await login(client, app.key)
        tenant_token = client.cookies[COOKIE]
    async with browser(app) as client:
        admin = await login(client, ADMIN_KEY)
        admin_token = client.cookies[COOKIE]
    secrets = [tenant_token, admin_token, tenant["csrf_token"], admin["csrf_token"], ADMIN_KEY]
    engine = app.app.state.runtime.control.store._engine
    async with engine.connect() as connection:
        rows = (await connection.execute(select(metadata.tables["console_sessions"]))).all()
        assert len(rows) == 2
        for table in metadata.sorted_tables:
            dump = repr((await connection.execute(select(table))).all())
            assert not [s for s in secrets if s in dump], table.name


async def test_admin_sessions_die_when_the_admin_key_changes(app: AppClient) -> None:
    async with browser(app) as client:
        await login(client, ADMIN_KEY)
        token = client.cookies[COOKIE]
    runtime = app.app.state.runtime
    control = runtime.control
    same = ConsoleSessions(control.store.sessions, control.auth, control.audit,
                           control.keys.digest, ADMIN_KEY, 60)  # fmt: skip
    assert (await same.find(token)) is not None
    changed = ConsoleSessions(control.store.sessions, control.auth, control.audit,
                              control.keys.digest, "admin_another_key_0123456789abcdefghijklmnop",
                              60)  # fmt: skip
    assert await changed.find(token) is None
    assert await same.find(token) is None  # removed once found stale


async def test_a_new_login_replaces_the_browser_session(app: AppClient) -> None:
    async with browser(app) as client:
        await login(client, app.key)
        first = client.cookies[COOKIE]
        await login(client, ADMIN_KEY)
        assert client.cookies[COOKIE] != first
    async with browser(app) as stolen:
        stolen.cookies.set(COOKIE, first)
        assert (await stolen.get("/v1/me")).status_code == 401
