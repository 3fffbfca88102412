"""Issue 13, point 6: an edited backup file cannot give a tenant what it did not have.

Before the fix the trailer was a plain SHA-256, so whoever could edit a file could re-hash
it: a deleted tenant's key line copied into another tenant's file made the old key open
that tenant, and a suspended tenant re-imported itself active, unlimited and with its
revoked key working. The attacks run here through the real `embedgate tenants export` and
`import` on the data dir of a running `embedgate serve`, and the result is checked over
HTTP against that server."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from embedgate.cli.main import main
from tests.cli.test_admin import CLEAN_ENV
from tests.helpers import ServerProcess
from tests.hostile_tenants.conftest import ADMIN, bearer, delete_tenant, make_tenant, serve

CACHE_S = 2.2  # keys and tenant records are cached for up to 2 s
Row = dict[str, Any]


DATA_DIRS: dict[int, Path] = {}  # server port -> its data dir


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("backup-tamper") / "data"
    with serve(data_dir) as started:
        DATA_DIRS[started.port] = data_dir
        yield started


def tenants(server: ServerProcess, *args: str) -> Result:
    """`embedgate tenants ARGS` on the server's data dir, as its operator runs it."""
    argv = ["tenants", "--data-dir", str(DATA_DIRS[server.port]), *args]
    return CliRunner().invoke(main, argv, env=CLEAN_ENV)


def export(server: ServerProcess, tenant: str, path: Path) -> list[Row]:
    result = tenants(server, "export", tenant, str(path))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewrite(path: Path, rows: list[Row]) -> None:
    """Write ``rows`` with a trailer made to match them, as an attacker would: the counts
    of each line type, and the hash of every byte before the trailer (all the attacker
    can compute without the server secret)."""
    body = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows[:-1])
    end = dict(rows[-1])
    kinds = {"key": "keys", "collection": "collections", "document": "documents",
             "usage": "usage"}  # fmt: skip
    for kind in kinds.values():
        end[kind] = 0
    for row in rows[1:-1]:
        end[kinds[row["type"]]] += 1
    digest = hashlib.sha256(body.encode()).hexdigest()
    for field in ("sha256", "signature"):
        if field in end:
            end[field] = digest
    path.write_text(body + json.dumps(end, separators=(",", ":")) + "\n")


def status(server: ServerProcess, key: str) -> int:
    return httpx.get(f"{server.url}/v1/collections", headers=bearer(key), timeout=30).status_code


def tenant_record(server: ServerProcess, tenant: str) -> Row:
    response = httpx.get(f"{server.url}/admin/tenants/{tenant}", headers=ADMIN, timeout=30)
    response.raise_for_status()
    record: Row = response.json()
    return record


def splice_deleted_key(server: ServerProcess, tmp_path: Path, name: str) -> tuple[Path, str, str]:
    """A deleted tenant's key line copied into another tenant's re-hashed file; the
    file, the old key and the other tenant's own key."""
    old_key = make_tenant(server.url, f"gone-{name}")
    own_key = make_tenant(server.url, f"target-{name}")
    assert status(server, old_key) == 200
    gone = export(server, f"gone-{name}", tmp_path / "gone.jsonl")
    path = tmp_path / "target.jsonl"
    rows = export(server, f"target-{name}", path)
    delete_tenant(server.url, f"gone-{name}")
    key_line = next(row for row in gone if row.get("type") == "key")
    rewrite(path, [rows[0], key_line, *rows[1:]])
    return path, old_key, own_key


def test_a_key_line_spliced_into_a_file_is_refused(server: ServerProcess, tmp_path: Path) -> None:
    path, old_key, own_key = splice_deleted_key(server, tmp_path, "a")
    result = tenants(server, "import", str(path), "--replace")
    assert result.exit_code != 0, result.output
    assert "the signature does not match: the file was changed" in result.output
    assert "Traceback" not in result.output
    time.sleep(CACHE_S)
    assert status(server, old_key) == 401  # the deleted tenant's key opens nothing
    assert status(server, own_key) == 200  # refused before anything was written or deleted


def test_an_edited_file_imported_untrusted_brings_no_key(
    server: ServerProcess, tmp_path: Path
) -> None:
    path, old_key, own_key = splice_deleted_key(server, tmp_path, "b")
    result = tenants(server, "import", str(path), "--replace", "--untrusted-source")
    assert result.exit_code == 0, result.output
    assert "API keys were not imported" in result.stderr
    time.sleep(CACHE_S)
    assert status(server, old_key) == 401
    assert status(server, own_key) == 401  # re-keyed: the operator issues new keys
    assert tenant_record(server, "target-b")["status"] == "suspended"


def suspended_tenant(server: ServerProcess, tenant: str) -> tuple[str, str]:
    """A tenant limited to 1 request a minute, with a live and a revoked key, suspended."""
    live = make_tenant(server.url, tenant, policy={"rpm": 1})
    url = f"{server.url}/admin/tenants/{tenant}"
    revoked = httpx.post(f"{url}/keys", json={"name": "old"}, headers=ADMIN, timeout=30).json()
    httpx.delete(f"{url}/keys/{revoked['id']}", headers=ADMIN, timeout=30).raise_for_status()
    httpx.patch(url, json={"status": "suspended"}, headers=ADMIN,
                timeout=30).raise_for_status()  # fmt: skip
    return live, str(revoked["key"])


def reactivated(rows: list[Row]) -> list[Row]:
    """The suspended tenant's file, made active, unlimited and with its revoked key back."""
    header = {**rows[0], "tenant": {**rows[0]["tenant"], "status": "active", "policy": {}}}
    keys = [{**row, "revoked_at": None} if row.get("type") == "key" else row for row in rows]
    return [header, *keys[1:]]


def assert_still_suspended(server: ServerProcess, tenant: str, live: str, revoked: str) -> None:
    time.sleep(CACHE_S)
    record = tenant_record(server, tenant)
    assert record["status"] == "suspended"
    assert status(server, revoked) == 401
    assert status(server, live) in (401, 403)  # no key of it works while suspended


@pytest.mark.parametrize("flags", [[], ["--untrusted-source"]], ids=["signed", "untrusted"])
def test_a_suspended_tenant_cannot_reimport_itself_active(
    server: ServerProcess, tmp_path: Path, flags: list[str]
) -> None:
    tenant = f"sus-{len(flags)}"
    live, revoked = suspended_tenant(server, tenant)
    genuine, edited = tmp_path / "genuine.jsonl", tmp_path / "edited.jsonl"
    rewrite(edited, reactivated(export(server, tenant, genuine)))
    result = tenants(server, "import", str(edited), "--replace", *flags)
    if flags:  # imported re-keyed: suspended, without keys, not the file's policy
        assert result.exit_code == 0, result.output
        assert tenant_record(server, tenant)["policy"] == {}
        assert_still_suspended(server, tenant, live, revoked)
        assert status(server, live) == 401
        return
    assert result.exit_code != 0
    assert "the signature does not match" in result.output
    assert tenant_record(server, tenant)["policy"] == {"rpm": 1}
    assert_still_suspended(server, tenant, live, revoked)
    # The signature refuses edits, not restores: the file as exported imports, trusted,
    # with the state it had; its live key works once the operator activates the tenant.
    restored = tenants(server, "import", str(genuine), "--replace")
    assert restored.exit_code == 0, restored.output
    assert json.loads(restored.stdout)["trusted"] is True
    assert tenant_record(server, tenant)["policy"] == {"rpm": 1}
    assert_still_suspended(server, tenant, live, revoked)
    httpx.patch(f"{server.url}/admin/tenants/{tenant}", json={"status": "active"},
                headers=ADMIN, timeout=30).raise_for_status()  # fmt: skip
    time.sleep(CACHE_S)
    assert status(server, live) == 200
    assert status(server, revoked) == 401
