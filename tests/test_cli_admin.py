"""`embedgate tenants` and `embedgate keys`, on the data dir and on a running server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from embedgate.cli import main
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
