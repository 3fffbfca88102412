"""Issue 13, point 3: a tenant's storage is capped by its plan. Before, 20 metadata-only
upserts of 1 MB and 20 new collections all succeeded whatever the plan. Now every cap
refuses with 403 and its own code, a refused batch leaves nothing behind, concurrent
writes cannot cross a cap, and `/v1/me` shows the caps and the usage."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.helpers import ServerProcess
from tests.hostile_tenants.conftest import bearer, make_tenant


def client_of(server: ServerProcess, tenant: str, **policy: Any) -> httpx.Client:
    key = make_tenant(server.url, tenant, policy=policy)
    return httpx.Client(base_url=server.url, headers=bearer(key), timeout=120)


def refused(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.status_code == 403, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["type"] == "permission_error"
    return error


def docs(*ids: str, text: str = "a short text", **metadata: Any) -> dict[str, Any]:
    return {"documents": [{"id": i, "text": f"{text} {i}", "metadata": metadata} for i in ids]}


def count(client: httpx.Client, name: str) -> int:
    response = client.get(f"/v1/collections/{name}")
    assert response.status_code == 200, response.text
    return int(response.json()["document_count"])


def storage(client: httpx.Client) -> dict[str, Any]:
    me = client.get("/v1/me")
    assert me.status_code == 200, me.text
    found: dict[str, Any] = me.json()["usage"]["storage"]
    return found


def test_max_collections(server: ServerProcess) -> None:
    with client_of(server, "caps-collections", max_collections=2) as client:
        for name in ("one", "two"):
            assert client.post("/v1/collections", json={"name": name}).status_code == 201
        error = refused(client.post("/v1/collections", json={"name": "three"}),
                        "collection_limit_exceeded")  # fmt: skip
        assert "at most 2 collections" in error["message"]
        assert "`max_collections`" in error["message"]
        assert "has 2" in error["message"]
        assert client.get("/v1/collections/three").status_code == 404
        assert [c["name"] for c in client.get("/v1/collections").json()["data"]] == ["one", "two"]
        assert client.delete("/v1/collections/two").status_code == 200
        assert client.post("/v1/collections", json={"name": "three"}).status_code == 201
        me = client.get("/v1/me").json()
        assert me["policy"]["max_collections"] == 2
        assert me["usage"]["storage"]["collections"] == 2


def test_max_documents_over_all_collections_refuses_a_batch_whole(
    server: ServerProcess,
) -> None:
    with client_of(server, "caps-documents", max_documents=5) as client:
        for name in ("a", "b"):
            client.post("/v1/collections", json={"name": name}).raise_for_status()
        assert (
            client.post("/v1/collections/a/documents", json=docs("1", "2", "3")).status_code == 200
        )
        error = refused(client.post("/v1/collections/b/documents", json=docs("x", "y", "z")),
                        "document_limit_exceeded")  # fmt: skip
        assert "at most 5 documents" in error["message"]
        assert "has 3" in error["message"]
        assert count(client, "b") == 0
        for doc_id in ("x", "y", "z"):
            assert client.get(f"/v1/collections/b/documents/{doc_id}").status_code == 404
        # replacing documents adds none: still allowed at the cap
        assert client.post("/v1/collections/b/documents", json=docs("x", "y")).status_code == 200
        replaced = client.post("/v1/collections/a/documents", json=docs("1", "2", text="new"))
        assert replaced.status_code == 200
        refused(client.post("/v1/collections/a/documents", json=docs("4")),
                "document_limit_exceeded")  # fmt: skip
        assert storage(client)["documents"] == 5


def test_concurrent_writes_cannot_cross_the_document_cap(server: ServerProcess) -> None:
    key = make_tenant(server.url, "caps-race", policy={"max_documents": 4})
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=60) as client:
        client.post("/v1/collections", json={"name": "race"}).raise_for_status()

    async def race() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(key),
                                     timeout=120) as client:  # fmt: skip
            answers = await asyncio.gather(*(
                client.post("/v1/collections/race/documents", json=docs(f"d{n}"))
                for n in range(12)
            ))  # fmt: skip
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(race()) == [200] * 4 + [403] * 8
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=60) as client:
        assert count(client, "race") == 4
        assert storage(client)["documents"] == 4


def test_metadata_caps_per_document_and_per_collection(server: ServerProcess) -> None:
    big = "x" * 1_000_000
    with client_of(server, "caps-metadata", max_metadata_bytes=1000,
                   max_collection_metadata_bytes=100) as client:  # fmt: skip
        error = refused(client.post("/v1/collections", json={"name": "c", "metadata": {"a": big}}),
                        "metadata_too_large")  # fmt: skip
        assert error["param"] == "metadata"
        assert "`max_collection_metadata_bytes`" in error["message"]
        assert client.get("/v1/collections/c").status_code == 404
        client.post(
            "/v1/collections", json={"name": "c", "metadata": {"a": "ok"}}
        ).raise_for_status()
        assert (
            client.post("/v1/collections/c/documents", json=docs("kept", tag="v1")).status_code
            == 200
        )
        batch = docs("fine", "kept")
        batch["documents"][1]["metadata"] = {"blob": big}  # a metadata-only update of 1 MB
        error = refused(client.post("/v1/collections/c/documents", json=batch),
                        "metadata_too_large")  # fmt: skip
        assert error["param"] == "documents[1].metadata"
        assert "`max_metadata_bytes` of 1000 bytes" in error["message"]
        assert client.get("/v1/collections/c/documents/fine").status_code == 404
        kept = client.get("/v1/collections/c/documents/kept").json()
        assert kept["metadata"] == {"tag": "v1"}
        assert client.get("/v1/me").json()["policy"]["max_metadata_bytes"] == 1000


def test_max_stored_bytes(server: ServerProcess) -> None:
    # a document of the bundled model: 384 dimensions, 1536 bytes of vector, plus its text
    with client_of(server, "caps-bytes", max_stored_bytes=16_000) as client:
        client.post("/v1/collections", json={"name": "s"}).raise_for_status()
        ten = [f"d{n}" for n in range(10)]
        assert client.post("/v1/collections/s/documents", json=docs(*ten)).status_code == 200
        used = storage(client)["stored_bytes"]
        assert 10 * 1536 < used <= 16_000 - 400  # room for one more short text, not 1000 bytes
        error = refused(client.post("/v1/collections/s/documents", json=docs("e1", "e2", "e3")),
                        "storage_limit_exceeded")  # fmt: skip
        assert "at most 16000 stored bytes" in error["message"]
        assert f"has {used}" in error["message"]
        assert client.get("/v1/collections/s/documents/e1").status_code == 404
        # a replacement adds no document: only the store's own check, after the write,
        # sees that it grows past the cap; it is rolled back
        long_text = {"documents": [{"id": "d0", "text": "long " * 200}]}
        refused(client.post("/v1/collections/s/documents", json=long_text),
                "storage_limit_exceeded")  # fmt: skip
        assert client.get("/v1/collections/s/documents/d0").json()["text"] == "a short text d0"
        assert count(client, "s") == 10
        assert storage(client) == {"collections": 1, "documents": 10, "stored_bytes": used}


def test_me_shows_storage_usage_without_caps(server: ServerProcess) -> None:
    with client_of(server, "caps-none") as client:
        assert storage(client) == {"collections": 0, "documents": 0, "stored_bytes": 0}
        client.post("/v1/collections", json={"name": "n"}).raise_for_status()
        client.post("/v1/collections/n/documents", json=docs("1", "2")).raise_for_status()
        found = storage(client)
        assert (found["collections"], found["documents"]) == (1, 2)
        assert found["stored_bytes"] > 2 * 1536
        assert "max_documents" not in client.get("/v1/me").json()["policy"]  # unset: no cap
