"""Hostile tenants: each test drives a real `embedgate serve` over HTTP, as one tenant
attacking the server or another tenant would, and checks that no other tenant is hurt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.helpers import ServerProcess, start_server

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUIET = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_WARMUP": "false"}


@contextlib.contextmanager
def serve(data_dir: Path, **env: str) -> Iterator[ServerProcess]:
    """A real server on the embedded default with the test admin key; ``env`` adds
    EMBEDGATE_* settings (e.g. ``EMBEDGATE_PLANS='{"default": {...}}'``)."""
    with start_server(data_dir, env={**QUIET, **env}) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_tenant(url: str, tenant_id: str, *, policy: dict[str, Any] | None = None,
                plan: str | None = None) -> str:  # fmt: skip
    """Create ``tenant_id`` (with its own policy overrides) and return a fresh key of it."""
    body: dict[str, Any] = {"id": tenant_id, "policy": policy or {}}
    if plan is not None:
        body["plan"] = plan
    httpx.post(f"{url}/admin/tenants", json=body, headers=ADMIN, timeout=30).raise_for_status()
    made = httpx.post(f"{url}/admin/tenants/{tenant_id}/keys", json={}, headers=ADMIN, timeout=30)
    made.raise_for_status()
    return str(made.json()["key"])


def delete_tenant(url: str, tenant_id: str) -> None:
    httpx.delete(f"{url}/admin/tenants/{tenant_id}", headers=ADMIN, timeout=30).raise_for_status()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One plain server per module; tests that need other settings start their own."""
    with serve(tmp_path_factory.mktemp("hostile-tenants") / "data") as started:
        yield started
