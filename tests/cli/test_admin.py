"""`embedgate tenants|keys|usage|audit`, on the data dir and on a running server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from embedgate.cli import audit as cli_audit
from embedgate.cli.main import main
from embedgate.storage.records import UsageRecord
from embedgate.storage.sql import SqlStateStore
from tests.conftest import ADMIN_KEY
from tests.helpers import ServerProcess

CLEAN_ENV = {key: None for key in os.environ if key.startswith("EMBEDGATE_")}


def cli(*args: str, env: dict[str, Any] | None = None, ok: bool = True) -> Any:
    result = CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})
    if ok:
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)
    assert result.exit_code != 0
    return result.output


def cli_text(*args: str, env: dict[str, Any] | None = None) -> str:
    result = CliRunner().invoke(main, list(args), env={**CLEAN_ENV, **(env or {})})
    assert result.exit_code == 0, result.output
    return result.stdout


def data_dir_with_secret(path: Path) -> Path:
    (path / "secret.key").write_text("the-servers-secret\n")  # as `serve` leaves it
    (path / "secret.key").chmod(0o600)
    return path


DAY = datetime(2026, 11, 21, tzinfo=UTC)


def store_usage(data_dir: Path, *records: tuple[str, datetime, int]) -> None:
    async def add() -> None:
        store = await SqlStateStore.open(None, data_dir)
        await store.usage.add([
            UsageRecord(tenant, "key_1", "all-minilm-l6-v2", "/v1/embeddings", 1, tokens, None,
                        200, 2.0, at)
            for tenant, at, tokens in records
        ])  # fmt: skip
        await store.aclose()

    asyncio.run(add())


def test_the_cli_never_creates_the_server_secret(tmp_path: Path) -> None:
    output = cli("tenants", "--data-dir", str(tmp_path), "list", ok=False)
    assert "secret.key" in output
    assert "embedgate serve" in output
    assert not (tmp_path / "secret.key").exists()


def test_tenant_and_key_lifecycle_on_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("the-servers-secret\n")  # as `serve` leaves it
    (tmp_path / "secret.key").chmod(0o600)
    target = ["--data-dir", str(tmp_path)]
    tenant = cli("tenants", *target, "create", "1001", "--name", "Search", "--policy",
                 '{"rpm": 60}')  # fmt: skip
    assert (tenant["id"], tenant["name"], tenant["policy"]) == ("1001", "Search", {"rpm": 60})
    assert [t["id"] for t in cli("tenants", *target, "list")] == ["1001"]
    updated = cli("tenants", *target, "update", "1001", "--status", "suspended")
    assert updated["status"] == "suspended"
    key = cli("keys", *target, "create", "1001", "--name", "nb", "--scope", "embeddings")
    assert key["key"].startswith("tenant_1001_")
    assert key["scopes"] == ["embeddings"]
    listed = cli("keys", *target, "list", "1001")
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0]
    rotated = cli("keys", *target, "rotate", "1001", key["id"], "--grace-period", "60")
    assert rotated["key"] != key["key"]
    assert cli("keys", *target, "revoke", "1001", rotated["id"])["deleted"] is True
    assert "No such key" in cli("keys", *target, "revoke", "1001", rotated["id"], ok=False)
    assert cli("tenants", *target, "delete", "1001", "--yes")["deleted"] is True
    assert "No such tenant" in cli("tenants", *target, "show", "1001", ok=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tenants", "create", "Bad_Id"], "Tenant ids"),
        (["tenants", "create", "ok", "--policy", "not json"], "not JSON"),
        (["tenants", "create", "ok", "--policy", '{"rpm": -5}'], "rpm"),
        (["keys", "create", "nobody"], "No such tenant"),
    ],
)
def test_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "secret.key").write_text("the-servers-secret\n")
    (tmp_path / "secret.key").chmod(0o600)
    output = cli(args[0], "--data-dir", str(tmp_path), *args[1:], ok=False)
    assert message in output
    assert "Traceback" not in output


def test_usage_export_on_the_data_dir(tmp_path: Path) -> None:
    target = ["--data-dir", str(data_dir_with_secret(tmp_path))]
    cli("tenants", *target, "list")  # creates the database
    store_usage(tmp_path, ("a", DAY + timedelta(hours=1), 10), ("a", DAY + timedelta(hours=2), 5),
                ("b", DAY + timedelta(days=1), 7), ("a", DAY - timedelta(days=1), 100))  # fmt: skip
    window = ["--start", "2026-11-21", "--end", "2026-11-23"]
    text = cli_text("usage", *target, "export", *window)
    assert list(csv.reader(io.StringIO(text))) == [
        [
            "tenant",
            "start",
            "end",
            "requests",
            "errors",
            "inputs",
            "tokens",
            "rerank_requests",
            "rerank_inputs",
            "rerank_tokens",
        ],
        ["a", "2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z", "2", "0", "2", "15", "0", "0", "0"],
        ["b", "2026-11-22T00:00:00Z", "2026-11-23T00:00:00Z", "1", "0", "1", "7", "0", "0", "0"],
    ]
    # the target flags may follow the subcommand too
    hourly = cli("usage", "export", *target, *window, "--tenant", "a", "--granularity", "hour",
                 "--format", "json")  # fmt: skip
    assert [(r["start"], r["tokens"]) for r in hourly] == [
        ("2026-11-21T01:00:00Z", 10), ("2026-11-21T02:00:00Z", 5)
    ]  # fmt: skip
    out = tmp_path / "usage.csv"
    assert cli_text("usage", *target, "export", *window, "--output", str(out)) == ""
    assert out.read_text() == text


def test_usage_export_refuses_bad_dates(tmp_path: Path) -> None:
    target = ["--data-dir", str(data_dir_with_secret(tmp_path))]
    output = cli("usage", *target, "export", "--start", "soon", ok=False)
    assert "'start' must be an ISO-8601 date" in output
    assert "Traceback" not in output
    assert "before 'end'" in cli("usage", *target, "export", "--start", "2999-01-01", ok=False)


@pytest.mark.parametrize("page", [1, 2, 1000])
def test_audit_export_pages_through_every_event(
    tmp_path: Path, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_audit, "AUDIT_PAGE", page)
    target = ["--data-dir", str(data_dir_with_secret(tmp_path))]
    for tenant_id in ("t1", "t2", "t3"):
        cli("tenants", *target, "create", tenant_id)
    cli("keys", *target, "create", "t2")
    lines = cli_text("audit", *target, "export").splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["tenant_id"]) for e in events] == [
        ("key.created", "t2"), ("tenant.created", "t3"), ("tenant.created", "t2"),
        ("tenant.created", "t1"),
    ]  # fmt: skip
    only = cli_text("audit", "export", *target, "--tenant", "t2", "--event", "key.created")
    assert [json.loads(line)["event"] for line in only.splitlines()] == ["key.created"]
    rows = list(csv.DictReader(io.StringIO(cli_text("audit", *target, "export", "--format",
                                                    "csv"))))  # fmt: skip
    assert [r["tenant_id"] for r in rows] == ["t2", "t3", "t2", "t1"]
    assert json.loads(rows[1]["detail"]) == {"plan": "default"}
    assert set(rows[0]) == {"id", "at", "event", "actor", "tenant_id", "key_prefix",
                            "client_ip", "detail"}  # fmt: skip


@pytest.mark.slow
def test_the_same_commands_against_a_running_server(served: ServerProcess) -> None:
    env = {"EMBEDGATE_SERVER": served.url, "EMBEDGATE_ADMIN_KEY": ADMIN_KEY}
    tenant = cli("tenants", "create", "remote-team", env=env)
    assert tenant["id"] == "remote-team"
    key = cli("keys", "create", "remote-team", "--expires-in", "3600", env=env)
    assert key["expires_at"] - key["created_at"] == 3600
    assert [k["id"] for k in cli("keys", "list", "remote-team", env=env)] == [key["id"]]
    audit = httpx.get(
        f"{served.url}/admin/audit", params={"tenant": "remote-team"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()  # fmt: skip
    assert [e["event"] for e in audit["data"]] == ["key.created", "tenant.created"]
    assert "already exists" in cli("tenants", "create", "remote-team", env=env, ok=False)
    wrong = cli("tenants", "list", env={**env, "EMBEDGATE_ADMIN_KEY": "admin_wrong"}, ok=False)
    assert "Invalid API key" in wrong
    assert cli("tenants", "delete", "remote-team", "--yes", env=env)["deleted"] is True


@pytest.mark.slow
def test_exports_from_a_running_server(served: ServerProcess,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cli_audit, "AUDIT_PAGE", 1)  # every event on a page of its own
    env = {"EMBEDGATE_SERVER": served.url, "EMBEDGATE_ADMIN_KEY": ADMIN_KEY}
    for tenant_id in ("export-1", "export-2"):
        cli("tenants", "create", tenant_id, env=env)
    events = [
        json.loads(line)
        for line in cli_text("audit", "export", "--event", "tenant.created", env=env).splitlines()
    ]
    tenants = [e["tenant_id"] for e in events]  # fmt: skip
    assert tenants[:2] == ["export-2", "export-1"]
    assert len(set(tenants)) == len(tenants)
    text = cli_text("usage", "export", "--start", "2026-01-01", env=env)
    assert text.splitlines()[0] == (
        "tenant,start,end,requests,errors,inputs,tokens,rerank_requests,rerank_inputs,rerank_tokens"
    )
    assert cli("usage", "export", "--format", "json", "--start", "2999-01-01", "--end",
               "2999-01-02", env=env) == []  # fmt: skip
    bad = cli("usage", "export", "--granularity", "hour", "--start", "x", env=env, ok=False)
    assert "'start' must be an ISO-8601 date" in bad
    for tenant_id in ("export-1", "export-2"):
        cli("tenants", "delete", tenant_id, "--yes", env=env)
