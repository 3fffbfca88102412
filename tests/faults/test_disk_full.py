"""The data dir's disk fills up during an ingest.

The client gets a clear 507 `storage_full` (never a 500, never a hang); the server stays
up; every document acknowledged before is there and searchable, and nothing of the
refused batch is; usage records wait in memory instead of being lost; once there is space
again writes work without a restart; both SQLite databases pass `PRAGMA integrity_check`.

The disk is a 4 MiB tmpfs (root can mount one). Where mounting is not allowed, the same
test runs with RLIMIT_FSIZE on the server process instead: SQLite then reports the EFBIG
as a disk I/O error, which embedgate answers as 503 `storage_error`.
"""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TEST_TENANT, issue_key
from tests.faults.helpers import FakeEngine, engine_config, error_code
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENV = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_WARMUP": "false"}
SIZE = 4 * 2**20
BATCH = 20
BOUND_S = 10.0  # the slowest answer allowed on a full disk (it fails at once)


class SmallDisk:
    """A data dir with little room: a tmpfs of ``SIZE`` bytes, else (no permission to
    mount) a normal directory whose server may write files of at most ``SIZE // 2``."""

    def __init__(self, root: Path) -> None:
        self.path = root / "disk"
        self.path.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(self.path)]
        self.mounted = subprocess.run(mount, capture_output=True, check=False).returncode == 0
        self.expected = {(507, "storage_full")}
        if not self.mounted:
            self.expected.add((503, "storage_error"))

    def limit(self, server: ServerProcess) -> None:
        if not self.mounted:
            resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE,
                             (SIZE // 2, resource.RLIM_INFINITY))  # fmt: skip

    def grow(self, server: ServerProcess) -> None:
        """What an operator does: more room (or fewer files elsewhere on the disk)."""
        if self.mounted:
            remount = ["mount", "-o", f"remount,size={4 * SIZE}", str(self.path)]
            subprocess.run(remount, check=True, capture_output=True)
        else:
            limits = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, limits)

    def remove(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path)
    try:
        yield small
    finally:
        small.remove()


class Tenant:
    """The tenant's client; counts its requests, each of which leaves one usage record."""

    def __init__(self, server: ServerProcess) -> None:
        self.base = f"{server.url}/v1/collections"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {server.key}"},
                                 timeout=BOUND_S + 20)  # fmt: skip
        self.requests = 0

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests += 1
        started = time.monotonic()
        response = self.http.request(method, f"{self.base}{path}", **kwargs)
        assert time.monotonic() - started < BOUND_S
        return response

    def ingest(self, batch: int) -> httpx.Response:
        docs = [
            {"id": f"d{batch}-{i}", "text": f"note {i} of batch {batch} term{batch}x{i}",
             "metadata": {"pad": "x" * 3000, "batch": batch}}
            for i in range(BATCH)
        ]  # fmt: skip
        return self.call("POST", "/kb/documents", json={"documents": docs})


def test_disk_full_during_ingest(tmp_path: Path, disk: SmallDisk, engine: FakeEngine) -> None:
    config = engine_config(tmp_path / "embedgate.yaml", engine.url)
    with start_server(disk.path, env={**ENV, "EMBEDGATE_CONFIG": str(config)}) as server:
        server.key = issue_key(server.url)
        disk.limit(server)
        tenant = Tenant(server)
        assert tenant.call("POST", "", json={"name": "kb"}).status_code == 201
        acknowledged: list[str] = []
        for batch in range(400):
            refused = tenant.ingest(batch)
            if refused.status_code != 200:
                break
            acknowledged += [f"d{batch}-{i}" for i in range(BATCH)]
        else:
            pytest.fail("the disk never filled up")
        assert (refused.status_code, error_code(refused)) in disk.expected, refused.text
        assert "write was refused" in refused.json()["error"]["message"]
        assert len(acknowledged) >= BATCH

        assert httpx.get(f"{server.url}/health").status_code == 200  # still up, still reading
        assert _stored(tenant) == set(acknowledged)  # all acknowledged, no part of the rest
        _assert_searchable(tenant, acknowledged[-1])
        time.sleep(1.5)  # a round of usage writes meets the full disk

        disk.grow(server)
        assert tenant.ingest(batch).status_code == 200  # the refused batch, now taken
        assert tenant.call("GET", f"/kb/documents/d{batch}-0").status_code == 200
        assert _metered(server) == tenant.requests  # no usage record was lost meanwhile
        assert "unhandled error" not in server.log()
    for database in [disk.path / "embedgate.db", *disk.path.glob("tenants/*/documents.db")]:
        with sqlite3.connect(database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _stored(tenant: Tenant) -> set[str]:
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 1000}
    while True:
        page = tenant.call("GET", "/kb/documents", params=params).json()
        ids |= {d["id"] for d in page["data"]}
        if not page["has_more"]:
            return ids
        params["after"] = page["next_after"]


def _assert_searchable(tenant: Tenant, doc_id: str) -> None:
    batch, index = doc_id[1:].split("-")
    for mode in ("keyword", "vector"):
        query = {"query": f"note {index} of batch {batch} term{batch}x{index}", "mode": mode,
                 "top_k": 3}  # fmt: skip
        found = tenant.call("POST", "/kb/search", json=query)
        assert found.status_code == 200, found.text
        assert doc_id in [hit["id"] for hit in found.json()["data"]], mode


def _metered(server: ServerProcess) -> int:
    report = httpx.get(f"{server.url}/admin/usage", params={"tenant": TEST_TENANT},
                       headers=ADMIN)  # fmt: skip
    assert report.status_code == 200, report.text
    return sum(row["requests"] for row in report.json()["data"])
