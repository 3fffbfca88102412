"""kill -9 during and after a bulk ingest loses no acknowledged document."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, issue_key
from tests.faults.helpers import FakeEngine, engine_config
from tests.helpers import start_server

pytestmark = pytest.mark.slow
ENV = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_WARMUP": "false"}


def _ingest(url: str, key: str, acknowledged: list[str], stop: threading.Event) -> None:
    """Batches of 20 documents until the server dies; ids of every 200 are recorded."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=headers, timeout=30) as client:
        for batch in range(10_000):
            if stop.is_set():
                return
            docs = [{"id": f"d{batch}-{i}", "text": f"document {i} of batch {batch}"}
                    for i in range(20)]  # fmt: skip
            try:
                response = client.post(f"{url}/v1/collections/kb/documents",
                                       json={"documents": docs})  # fmt: skip
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200:
                acknowledged.extend(d["id"] for d in docs)


def test_kill_9_during_ingest_loses_no_acknowledged_document(
    tmp_path: Path, engine: FakeEngine
) -> None:
    data = tmp_path / "data"
    config = engine_config(tmp_path / "embedgate.yaml", engine.url)
    env = {**ENV, "EMBEDGATE_CONFIG": str(config)}
    acknowledged: list[str] = []
    with start_server(data, env=env) as server:
        key = issue_key(server.url)
        headers = {"Authorization": f"Bearer {key}"}
        httpx.post(f"{server.url}/v1/collections", json={"name": "kb"}, headers=headers)
        stop = threading.Event()
        writer = threading.Thread(target=_ingest, args=(server.url, key, acknowledged, stop))
        writer.start()
        while len(acknowledged) < 400 and writer.is_alive():
            writer.join(0.05)
        server.process.kill()  # SIGKILL, mid-ingest
        server.process.wait()
        stop.set()
        writer.join()
    assert len(acknowledged) >= 400
    with start_server(data, env=env) as again:
        headers = {"Authorization": f"Bearer {key}"}
        base = f"{again.url}/v1/collections/kb"
        count = httpx.get(base, headers=headers).json()["document_count"]
        assert count >= len(acknowledged)
        assert set(acknowledged) <= _stored_ids(base, headers)
        for doc_id in acknowledged[::37] + acknowledged[-5:]:
            assert httpx.get(f"{base}/documents/{doc_id}", headers=headers).status_code == 200
        last = acknowledged[-1]
        batch, index = last[1:].split("-")
        found = httpx.post(f"{base}/search", headers=headers, json={
            "query": f"document {index} of batch {batch}", "top_k": 3, "mode": "keyword",
        }).json()["data"]  # fmt: skip
        assert last in [hit["id"] for hit in found]
        vector = httpx.post(f"{base}/search", headers=headers, json={
            "query": f"document {index} of batch {batch}", "top_k": 3,
        }).json()["data"]  # fmt: skip
        assert last in [hit["id"] for hit in vector]


def test_kill_9_right_after_a_bulk_ingest_loses_nothing(tmp_path: Path, engine: FakeEngine) -> None:
    """Killed as soon as the last batch is acknowledged, with an HNSW graph in play (a low
    exact-search threshold) whose saved files lag behind the database: the restarted
    server has every document, and finds them by vector and by keyword."""
    data = tmp_path / "data"
    config = engine_config(tmp_path / "embedgate.yaml", engine.url)
    env = {**ENV, "EMBEDGATE_SEARCH_EXACT_THRESHOLD": "50", "EMBEDGATE_CONFIG": str(config)}
    acknowledged: list[str] = []
    with start_server(data, env=env) as server:
        key = issue_key(server.url)
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert client.post(f"{server.url}/v1/collections", json={"name": "kb"}).status_code == 201
        base = f"{server.url}/v1/collections/kb"
        for batch in range(24):
            docs = [{"id": f"d{batch}-{i}", "text": f"document {i} of batch {batch}"}
                    for i in range(25)]  # fmt: skip
            response = client.post(f"{base}/documents", json={"documents": docs})
            assert response.status_code == 200, response.text
            acknowledged += [d["id"] for d in docs]
            if batch == 0:  # load the index: from now on each write updates it, and the
                # graph it grows past the threshold is saved whenever it drifts by a tenth
                client.post(f"{base}/search", json={"query": "document", "top_k": 1})
        server.process.kill()  # SIGKILL, right after the last acknowledgement
        server.process.wait()
    assert list(data.glob("tenants/*/collection-*.usearch")), "no graph was saved"
    with start_server(data, env=env) as again:
        headers = {"Authorization": f"Bearer {key}"}
        base = f"{again.url}/v1/collections/kb"
        assert httpx.get(base, headers=headers).json()["document_count"] == len(acknowledged)
        assert _stored_ids(base, headers) == set(acknowledged)
        for doc_id in [*acknowledged[::97], *acknowledged[-3:]]:
            batch, index = doc_id[1:].split("-")
            for mode in ("vector", "keyword"):
                found = httpx.post(f"{base}/search", headers=headers, json={
                    "query": f"document {index} of batch {batch}", "top_k": 3, "mode": mode,
                }).json()["data"]  # fmt: skip
                assert doc_id in [hit["id"] for hit in found], (doc_id, mode)


def _stored_ids(collection: str, headers: dict[str, str]) -> set[str]:
    ids: set[str] = set()
    params: dict[str, str | int] = {"limit": 1000}
    while True:
        page = httpx.get(f"{collection}/documents", params=params, headers=headers).json()
        ids |= {d["id"] for d in page["data"]}
        if not page["has_more"]:
            return ids
        params["after"] = page["next_after"]
