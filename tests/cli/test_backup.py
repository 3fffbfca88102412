"""`embedgate tenants export|import` on a data dir: the file, and every way it is refused.

The full round trip through a real app, on SQLite and on PostgreSQL + pgvector, is in
tests/backup/test_service.py.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from embedgate.backup.service import Backup
from embedgate.cli.main import main
from embedgate.docstore.base import Collection, Document, Upsert
from embedgate.docstore.local.cache import directory_name
from embedgate.docstore.local.collection import LocalCollection
from embedgate.docstore.local.store import LocalDocumentStore
from embedgate.runtime import ControlPlane
from embedgate.storage.records import UsageRecord
from embedgate.storage.sql import SqlStateStore
from embedgate.tenancy.policy import Policy
from tests.cli.test_admin import CLEAN_ENV, cli, cli_text, data_dir_with_secret
from tests.conftest import make_settings

NOW = datetime.now(UTC)


def vector(*values: float) -> Any:
    row = np.asarray(values, dtype=np.float32)
    return row / np.linalg.norm(row)


def upsert(doc_id: str, text: str, vec: Any, **metadata: Any) -> Upsert:
    return Upsert(Document(doc_id, text, metadata), hashlib.sha256(text.encode()).hexdigest(), vec)


async def _seed(data_dir: Path, tenant: str, marker: str) -> dict[str, str]:
    control = await ControlPlane.open(make_settings(data_dir), background=False)
    await control.tenants.create(tenant, name=f"{tenant} Inc", plan=None,
                                 policy=Policy(rpm=60), actor="test")  # fmt: skip
    live = await control.key_admin.create(tenant, actor="test", name="live")
    gone = await control.key_admin.create(tenant, actor="test", name="gone")
    await control.key_admin.revoke(tenant, gone.record.id, actor="test")
    await control.store.usage.add([
        UsageRecord(tenant, live.record.id, "all-minilm-l6-v2", "/v1/embeddings", 2, 7, None,
                    200, 3.5, NOW - timedelta(minutes=m))
        for m in (1, 2, 3)
    ])  # fmt: skip
    uid = (await control.tenants.get(tenant)).uid  # the store keys documents by it
    await control.aclose()
    store = await LocalDocumentStore.open(data_dir)
    await store.create_collection(uid, Collection("kb", "all-minilm-l6-v2", 4,
                                                     {"team": marker}, NOW))  # fmt: skip
    await store.collection(uid, "kb").upsert([
        upsert("a", f"{marker} alpha text", vector(1, 0, 0, 0), lang="en"),
        upsert("b", f"{marker} beta text", vector(0, 1, 0, 0), n=2),
        upsert("c", f"{marker} 中文 text", vector(1, 1, 1, 0)),
    ])  # fmt: skip
    await store.create_collection(uid, Collection("empty", "some-other-model", 8, {}, NOW))
    await store.aclose()
    return {"live": live.key, "gone": gone.key}


def seed(data_dir: Path, tenant: str = "acme", marker: str = "acme-secret") -> dict[str, str]:
    return asyncio.run(_seed(data_dir, tenant, marker))


def lines(path: Path) -> list[dict[str, Any]]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as text:
        return [json.loads(line) for line in text]


def write_lines(path: Path, rows: list[str]) -> None:
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data dir with two tenants: acme (to export) and other (never in acme's file)."""
    directory = tmp_path / "data"
    directory.mkdir()
    data_dir_with_secret(directory)
    seed(directory, "other", "other-private")
    seed(directory)
    return directory


def run(data: Path, *args: str, ok: bool = True) -> Any:
    return cli("tenants", "--data-dir", str(data), *args, ok=ok)


def documents(
    data: Path, tenant: str = "acme"
) -> list[tuple[str, str, dict[str, Any], str, bytes]]:
    """The tenant's documents in "kb"; with no such tenant, every document left in a
    directory of no live tenant (what a removal should have left: nothing)."""

    async def read() -> list[Upsert]:
        state = await SqlStateStore.open(None, data)
        try:
            found, live = await state.tenants.get(tenant), await state.tenants.uids()
        finally:
            await state.aclose()
        owned = {directory_name(uid) for uid in live}
        orphans = [d.name for d in (data / "tenants").glob("*") if d.is_dir()
                   and d.name not in owned] if found is None else []  # fmt: skip
        store = await LocalDocumentStore.open(data)
        try:
            if found is not None:
                return await store.collection(found.uid, "kb").export_documents(
                    after=None, limit=100
                )
            return [Upsert(Document(name, "orphan directory"), "", None) for name in orphans]
        finally:
            await store.aclose()

    return [(u.document.id, u.document.text, u.document.metadata, u.text_hash,
             np.asarray(u.vector).tobytes()) for u in asyncio.run(read())]  # fmt: skip


@pytest.mark.parametrize("name", ["acme.jsonl", "acme.jsonl.gz"])
def test_export_writes_the_documented_format(data: Path, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    summary = run(data, "export", "acme", str(path))
    assert summary == {"tenant": "acme", "file": str(path), "exported_at": summary["exported_at"],
                       "keys": 2, "collections": 2, "documents": 3, "usage": 3}  # fmt: skip
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    rows = lines(path)
    header, end = rows[0], rows[-1]
    assert (header["format"], header["version"], header["tenant"]["id"]) == (
        "embedgate-tenant", 2, "acme")  # fmt: skip
    assert header["tenant"]["policy"] == {"rpm": 60}
    assert [r["type"] for r in rows[1:]] == ["key", "key", "collection", "collection", "document",
                                             "document", "document", "usage", "usage", "usage",
                                             "end"]  # fmt: skip
    keys = [r for r in rows if r.get("type") == "key"]
    assert {k["name"]: k["revoked_at"] is not None for k in keys} == {"live": False, "gone": True}
    assert all(len(k["digest"]) == 64 for k in keys)
    document = next(r for r in rows if r.get("type") == "document")
    assert document["collection"] == "kb"
    raw = np.frombuffer(__import__("base64").b64decode(document["vector"]), dtype="<f4")
    assert np.allclose(raw, vector(1, 0, 0, 0))
    assert (end["keys"], end["collections"], end["documents"], end["usage"]) == (2, 2, 3, 3)
    assert len(end["signature"]) == 64  # an HMAC, not a checksum
    assert "sha256" not in end


def test_export_never_holds_another_tenants_data(data: Path, tmp_path: Path) -> None:
    mine, theirs = tmp_path / "acme.jsonl", tmp_path / "other.jsonl"
    run(data, "export", "acme", str(mine))
    run(data, "export", "other", str(theirs))
    text = mine.read_text()
    assert "acme-secret alpha" in text
    assert "other-private" not in text  # the other's texts and collection metadata
    assert "tenant_other" not in text  # its key prefixes

    def digests(path: Path) -> set[str]:
        return {row["digest"] for row in lines(path) if row.get("type") == "key"}

    assert len(digests(mine)) == len(digests(theirs)) == 2
    assert not digests(mine) & digests(theirs)


def test_restore_after_delete_gives_the_same_tenant(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl.gz"
    run(data, "export", "acme", str(path))
    before, shown = documents(data), run(data, "show", "acme")
    assert run(data, "delete", "acme", "--yes")["deleted"] is True
    assert documents(data) == []
    summary = run(data, "import", str(path))
    assert summary["keys_work"] is True
    assert summary["unknown_models"] == ["some-other-model"]
    assert (summary["keys"], summary["documents"], summary["usage"]) == (2, 3, 3)
    assert run(data, "show", "acme") == shown  # name, plan, status, policy, timestamps
    assert documents(data) == before  # texts, metadata, hashes, vectors: bit for bit
    assert [k["name"] for k in cli("keys", "--data-dir", str(data), "list", "acme")] == ["live"]
    assert documents(data, "other")[0][1] == "other-private alpha text"
    events = [json.loads(line)["event"] for line in
              cli_text("audit", "--data-dir", str(data), "export", "--tenant", "acme")
              .splitlines()]  # fmt: skip
    assert events[:3] == ["tenant.imported", "tenant.deleted", "tenant.exported"]


def test_usage_is_replaced_not_doubled(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    run(data, "import", str(path), "--replace")  # usage stays on a tenant's deletion
    month = cli("usage", "--data-dir", str(data), "export", "--tenant", "acme", "--format",
                "json")  # fmt: skip
    assert sum(row["requests"] for row in month) == 3
    assert run(data, "export", "acme", str(tmp_path / "none.jsonl"), "--usage", "none")[
        "usage"] == 0  # fmt: skip


def test_an_existing_tenant_is_refused_without_replace(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    output = run(data, "import", str(path), ok=False)
    assert "tenant acme already exists" in output
    assert "--replace" in output
    cli("keys", "--data-dir", str(data), "create", "acme", "--name", "after-export")
    summary = run(data, "import", str(path), "--replace")
    assert summary["replaced"] is True
    listed = cli("keys", "--data-dir", str(data), "list", "acme")
    assert [k["name"] for k in listed] == ["live"]  # the key made after the export is gone


def test_the_server_mode_is_refused_with_a_reason(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl"
    output = cli("tenants", "--server", "http://127.0.0.1:9", "export", "acme", str(path),
                 ok=False)  # fmt: skip
    assert "not through a server: drop --server and unset EMBEDGATE_SERVER" in output
    run(data, "export", "acme", str(path))
    remote = {"EMBEDGATE_SERVER": "http://127.0.0.1:9"}
    assert "not through a server" in cli("tenants", "import", str(path), env=remote, ok=False)


def test_an_unknown_tenant_is_not_exported(data: Path, tmp_path: Path) -> None:
    assert "No such tenant" in run(data, "export", "nobody", str(tmp_path / "x.jsonl"), ok=False)
    assert not (tmp_path / "x.jsonl").exists()


def _damaged(path: Path, how: str) -> None:
    rows = path.read_text().splitlines()
    if how == "last line lost":
        write_lines(path, rows[:-1])
    elif how == "cut mid-line":
        path.write_text("\n".join(rows)[:-20])
    elif how == "a document lost":
        write_lines(path, [r for r in rows if '"id":"b"' not in r])
    elif how == "text changed":
        write_lines(path, [r.replace("beta", "BETA") for r in rows])
    elif how == "not JSON":
        write_lines(path, [*rows[:3], "{oops", *rows[3:]])
    elif how == "bad vector":
        first = json.loads(rows[5])
        rows[5] = json.dumps({**first, "vector": "AAAAAA=="})
        write_lines(path, rows)


@pytest.mark.parametrize(("how", "message"), [
    ("last line lost", "without its trailer"),
    ("cut mid-line", "line 12 is cut off"),
    ("a document lost", "the trailer counts 3 documents, the file holds 2"),
    ("text changed", "the signature does not match: the file was changed"),
    ("not JSON", "line 4: line: Invalid JSON"),
    ("bad vector", "line 6: vector: 1 dimensions, the collection has 4"),
])  # fmt: skip
def test_a_damaged_file_is_refused_before_anything_is_written(
    data: Path, tmp_path: Path, how: str, message: str
) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    run(data, "delete", "acme", "--yes")
    _damaged(path, how)
    output = run(data, "import", str(path), ok=False)
    assert message in output
    assert "Traceback" not in output
    assert "No such tenant" in run(data, "show", "acme", ok=False)
    assert documents(data) == []


def test_a_truncated_gzip_file_is_refused(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl.gz"
    run(data, "export", "acme", str(path))
    run(data, "delete", "acme", "--yes")
    path.write_bytes(path.read_bytes()[:-30])
    output = run(data, "import", str(path), ok=False)
    assert "truncated" in output
    assert "No such tenant" in run(data, "show", "acme", ok=False)


def test_other_files_are_refused(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    for text, message in [
        ("", "the file is empty"),
        ('{"a": 1}\n', "not an embedgate tenant"),
        ('{"format": "embedgate-tenant", "version": 3}\n', "version 3"),
    ]:
        path.write_text(text)
        assert message in run(data, "import", str(path), ok=False)


def test_a_failed_import_removes_what_it_wrote(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    run(data, "delete", "acme", "--yes")

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(LocalCollection, "upsert", broken)
    assert "disk full" in run(data, "import", str(path), ok=False)
    monkeypatch.undo()
    assert "No such tenant" in run(data, "show", "acme", ok=False)
    assert documents(data) == []
    assert run(data, "import", str(path))["documents"] == 3  # and it can be run again


def test_another_server_imports_the_data_only_untrusted(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.key").write_text("another-secret\n")
    (elsewhere / "secret.key").chmod(0o600)
    argv = ["tenants", "--data-dir", str(elsewhere), "import", str(path)]
    refused = CliRunner().invoke(main, argv, env=CLEAN_ENV)
    assert refused.exit_code != 0
    assert "signed under another server secret" in refused.output
    assert "--untrusted-source" in refused.output
    result = CliRunner().invoke(main, [*argv, "--untrusted-source"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["trusted"], summary["keys_work"], summary["keys"]) == (False, False, 0)
    assert summary["left_out"] == {"keys": 2, "status": "active", "plan": "default",
                                   "policy": {"rpm": 60}}  # fmt: skip
    assert "its 2 API keys were not imported" in result.stderr
    shown = cli("tenants", "--data-dir", str(elsewhere), "show", "acme")
    assert (shown["status"], shown["policy"]) == ("suspended", {})
    assert cli("keys", "--data-dir", str(elsewhere), "list", "acme") == []
    assert "'some-other-model' is not in this server's registry" in result.stderr
    usage = cli("usage", "--data-dir", str(elsewhere), "export", "--tenant", "acme",
                "--format", "json")  # fmt: skip
    assert sum(row["tokens"] for row in usage) == 21  # the month's usage moved along


def test_an_unknown_plan_is_refused_unless_another_is_chosen(data: Path, tmp_path: Path) -> None:
    path = tmp_path / "acme.jsonl"
    run(data, "export", "acme", str(path))
    config = tmp_path / "embedgate.yaml"
    config.write_text("plans:\n  pro:\n    rpm: 600\n")
    refused = run(data, "--config", str(config), "import", str(path), "--replace", ok=False)
    assert "the plan 'default' is not in this server's config (its plans: pro)" in refused
    assert run(data, "show", "acme")["plan"] == "default"  # nothing was deleted
    run(data, "--config", str(config), "import", str(path), "--replace", "--plan", "pro")
    assert run(data, "show", "acme")["plan"] == "pro"


def test_a_file_swapped_between_check_and_write_is_refused(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check reads the file, then the import reads it again to write: a file replaced
    in between (here by another tenant's signed export) is refused, and nothing is left."""
    path, other = tmp_path / "acme.jsonl", tmp_path / "other.jsonl"
    run(data, "export", "acme", str(path))
    run(data, "export", "other", str(other))
    run(data, "delete", "acme", "--yes")
    checked = Backup.check

    def check_then_swap(self: Backup, file: Path, **options: Any) -> Any:
        manifest = checked(self, file, **options)
        file.write_bytes(other.read_bytes())
        return manifest

    monkeypatch.setattr(Backup, "check", check_then_swap)
    assert "the file changed since it was checked" in run(data, "import", str(path), ok=False)
    monkeypatch.undo()
    assert "No such tenant" in run(data, "show", "acme", ok=False)
    assert documents(data) == []
    assert run(data, "show", "other")["status"] == "active"  # untouched
