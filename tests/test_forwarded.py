"""X-Forwarded-For is believed only from the proxies named in EMBEDGATE_FORWARDED_ALLOW_IPS."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def failed_from(server: ServerProcess, forged: str) -> list[str]:
    """Client addresses the audit log recorded for a bad key sent with a forged header."""
    headers = {"Authorization": "Bearer tenant_nobody_" + "x" * 32, "X-Forwarded-For": forged}
    assert httpx.get(f"{server.url}/v1/me", headers=headers).status_code == 401
    params = {"event": "auth.failed", "limit": 50}
    events = httpx.get(f"{server.url}/admin/audit", params=params, headers=ADMIN).json()["data"]
    return [event["client_ip"] for event in events]


def test_a_forwarded_address_is_ignored_by_default(served: ServerProcess) -> None:
    addresses = failed_from(served, "203.0.113.7")
    assert "203.0.113.7" not in addresses
    assert "127.0.0.1" in addresses


def test_a_named_proxy_is_believed(tmp_path: Path) -> None:
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    with start_server(tmp_path / "data", env=env) as server:
        assert "198.51.100.9" in failed_from(server, "198.51.100.9")
