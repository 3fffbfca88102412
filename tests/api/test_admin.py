"""/admin: tenants, keys and audit over HTTP, with the admin key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, AppClient

pytestmark = pytest.mark.anyio

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def admin(app_factory: Any) -> AppClient:
    app: AppClient = await app_factory(warmup=False)
    app.http.headers.update(ADMIN)
    return app


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def make_tenant(http: httpx.AsyncClient, tenant_id: str, **body: Any) -> dict[str, Any]:
    response = await http.post("/admin/tenants", json={"id": tenant_id, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/tenants"),
        ("POST", "/admin/tenants"),
        ("GET", "/admin/tenants/acme"),
        ("PATCH", "/admin/tenants/acme"),
        ("DELETE", "/admin/tenants/acme"),
        ("POST", "/admin/tenants/acme/keys"),
        ("GET", "/admin/tenants/acme/keys"),
        ("DELETE", "/admin/tenants/acme/keys/key_1"),
        ("POST", "/admin/tenants/acme/keys/key_1/rotate"),
        ("GET", "/admin/audit"),
    ],
)
async def test_every_admin_route_needs_the_admin_key(
    admin: AppClient, method: str, path: str
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer admin_wrong"}):
        response = await admin.http.request(method, path, headers=headers, json={})
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY


async def test_tenant_lifecycle(admin: AppClient) -> None:
    http = admin.http
    created = await make_tenant(http, "1001", name="Team 1001", policy={"rpm": 60})
    assert created["id"] == "1001"
    assert created["object"] == "tenant"
    assert created["status"] == "active"
    assert created["policy"] == {"rpm": 60}
    assert isinstance(created["created_at"], int)
    duplicate = await http.post("/admin/tenants", json={"id": "1001"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "tenant_exists"
    patched = await http.patch(
        "/admin/tenants/1001", json={"status": "suspended", "policy": {"max_dimensions": 256}}
    )
    assert patched.json()["status"] == "suspended"
    assert patched.json()["policy"] == {"max_dimensions": 256}
    assert (await http.get("/admin/tenants/1001")).json() == patched.json()
    deleted = await http.delete("/admin/tenants/1001")
    assert deleted.json() == {"id": "1001", "object": "tenant", "deleted": True}
    for response in (
        await http.get("/admin/tenants/1001"),
        await http.delete("/admin/tenants/1001"),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "tenant_id", ["", "Acme", "-acme", "a" * 64, "tenant_x", "../x", "a/b", "a\x00b", "über"]
)
async def test_bad_tenant_ids_are_400(admin: AppClient, tenant_id: str) -> None:
    response = await admin.http.post("/admin/tenants", json={"id": tenant_id})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "id"


@pytest.mark.parametrize(
    "body",
    [
        {"id": "ok", "policy": {"no_such_field": 1}},
        {"id": "ok", "policy": {"rpm": -1}},
        {"id": "ok", "policy": {"ip_allowlist": ["not-a-cidr"]}},
        {"id": "ok", "unexpected": True},
    ],
)
async def test_bad_tenant_bodies_are_400(admin: AppClient, body: dict[str, Any]) -> None:
    response = await admin.http.post("/admin/tenants", json=body)
    assert response.status_code == 400, response.text


async def test_a_form_encoded_body_gets_a_clear_400(admin: AppClient) -> None:
    response = await admin.http.post(
        "/admin/tenants",
        content=b'{"id": "1001"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "Content-Type: application/json" in response.json()["error"]["message"]


async def test_tenants_are_paged(admin: AppClient) -> None:
    for tenant_id in ["c", "a", "b"]:
        await make_tenant(admin.http, tenant_id)
    first = (await admin.http.get("/admin/tenants", params={"limit": 2})).json()
    assert [t["id"] for t in first["data"]] == ["a", "b"]
    assert first["has_more"] is True
    rest = (await admin.http.get("/admin/tenants", params={"after": "b"})).json()
    assert [t["id"] for t in rest["data"]] == ["c", "test-tenant"]  # + the fixture's
    assert rest["has_more"] is False


async def test_keys_are_shown_once_and_stored_as_digests_only(
    admin: AppClient, tmp_path: Path
) -> None:
    http = admin.http
    await make_tenant(http, "acme")
    response = await http.post("/admin/tenants/acme/keys", json={"name": "ci", "expires_in": 3600})
    assert response.status_code == 201
    created = response.json()
    secret = created["key"]
    assert re.fullmatch(r"tenant_acme_[A-Za-z0-9]{43}", secret)
    assert created["prefix"] == secret[: len("tenant_acme_") + 4]
    assert created["scopes"] == ["embeddings", "search:read", "search:write"]
    assert created["expires_at"] - created["created_at"] == 3600
    listed = (await http.get("/admin/tenants/acme/keys")).json()["data"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0]
    # The data dir (database, WAL, key files) holds neither the key nor its random part.
    assert files_containing(tmp_path, secret.encode()) == []
    assert files_containing(tmp_path, secret.split("_")[-1].encode()) == []


async def test_revoke_and_rotate(admin: AppClient) -> None:
    http = admin.http
    runtime = admin.app.state.runtime
    await make_tenant(http, "acme")
    first = (await http.post("/admin/tenants/acme/keys", json={"scopes": ["embeddings"]})).json()
    rotated = await http.post(
        f"/admin/tenants/acme/keys/{first['id']}/rotate", json={"grace_period": 300}
    )
    assert rotated.status_code == 201
    second = rotated.json()
    assert second["key"] != first["key"]
    assert second["scopes"] == ["embeddings"]
    assert await runtime.control.keys.verify(first["key"]) is not None  # within the grace period
    assert await runtime.control.keys.verify(second["key"]) is not None
    listed = (await http.get("/admin/tenants/acme/keys")).json()["data"]
    assert {k["id"] for k in listed} == {first["id"], second["id"]}
    revoked = await http.delete(f"/admin/tenants/acme/keys/{second['id']}")
    assert revoked.json() == {"id": second["id"], "object": "api_key", "deleted": True}
    again = await http.delete(f"/admin/tenants/acme/keys/{second['id']}")
    assert again.status_code == 404
    other = await http.delete(f"/admin/tenants/other/keys/{first['id']}")
    assert other.status_code == 404
    missing = await http.post("/admin/tenants/nobody/keys", json={})
    assert missing.status_code == 404


async def test_deleting_a_tenant_deletes_its_keys(admin: AppClient) -> None:
    await make_tenant(admin.http, "acme")
    key = (await admin.http.post("/admin/tenants/acme/keys", json={})).json()["key"]
    await admin.http.delete("/admin/tenants/acme")
    runtime = admin.app.state.runtime
    assert await runtime.control.store.keys.by_digest(runtime.control.keys.digest(key)) is None


async def test_admin_actions_are_audited_without_secrets(admin: AppClient) -> None:
    http = admin.http
    await make_tenant(http, "acme")
    key = (await http.post("/admin/tenants/acme/keys", json={"name": "ci"})).json()
    await http.post(f"/admin/tenants/acme/keys/{key['id']}/rotate", json={})
    await http.patch("/admin/tenants/acme", json={"plan": "premium"})
    await http.delete("/admin/tenants/acme")
    audit = (await http.get("/admin/audit", params={"tenant": "acme"})).json()
    events = [e["event"] for e in audit["data"]]
    assert events == [
        "tenant.deleted", "tenant.updated", "key.rotated", "key.created", "tenant.created"
    ]  # fmt: skip
    assert all(e["actor"] == "admin" and e["client_ip"] for e in audit["data"])
    assert key["key"] not in str(audit)
    params = {"event": "key.created", "tenant": "acme"}
    only = (await http.get("/admin/audit", params=params)).json()["data"]
    assert [e["key_prefix"] for e in only] == [key["prefix"]]
    page = (await http.get("/admin/audit", params={"tenant": "acme", "limit": 2})).json()
    assert page["has_more"] is True
    before = {"tenant": "acme", "before": page["data"][-1]["id"]}
    older = await http.get("/admin/audit", params=before)
    assert [e["event"] for e in older.json()["data"]] == events[2:]
    for cursor in (-(10**22), 0, 2**63):  # found by schemathesis: SQLite's int64 overflowed
        refused = await http.get("/admin/audit", params={"before": cursor})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "query.before"
