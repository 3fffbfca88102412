"""kill -9 during and after a bulk ingest loses no acknowledged document."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, issue_key
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


def test_kill_9_during_ingest_loses_no_acknowledged_document(tmp_path: Path) -> None:
    data = tmp_path / "data"
    acknowledged: list[str] = []
    with start_server(data, env=ENV) as server:
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
    with start_server(data, env=ENV) as again:
        headers = {"Authorization": f"Bearer {key}"}
        base = f"{again.url}/v1/collections/kb"
        count = httpx.get(base, headers=headers).json()["document_count"]
        assert count >= len(acknowledged)
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
