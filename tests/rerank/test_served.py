"""A real `embedgate serve` process configured with a rerank model, from a config file."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from sentence_transformers import CrossEncoder

from tests.conftest import ADMIN_KEY, issue_key
from tests.helpers import start_server
from tests.rerank.conftest import rerank_models

QUERY = "how do vaccines train the immune system?"
DOCUMENTS = ["Vaccines expose the immune system to a harmless piece of a pathogen.",
             "The museum opens at nine o'clock every morning except Monday.",
             "Photosynthesis converts sunlight, water and carbon dioxide into sugar."]  # fmt: skip


def test_rerank_on_a_served_process(
    tmp_path: Path, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    config = tmp_path / "embedgate.yaml"
    models = rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)
    config.write_text(yaml.safe_dump({"models": models}))
    env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(config)}
    with start_server(tmp_path / "data", env=env) as server:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        tenant = {"id": "limited", "policy": {"rpm": 100}}
        httpx.post(f"{server.url}/admin/tenants", json=tenant, headers=admin).raise_for_status()
        key = httpx.post(f"{server.url}/admin/tenants/limited/keys", json={}, headers=admin)
        headers = {"Authorization": f"Bearer {key.json()['key']}"}
        body = {"model": "cross", "query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                "return_documents": True}  # fmt: skip
        response = httpx.post(f"{server.url}/v1/rerank", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == response.json()["id"]
        assert response.headers["x-ratelimit-limit-requests"] == "100"  # admitted
        reference = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu")
        scores = reference.predict([(QUERY, doc) for doc in DOCUMENTS])
        best = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])[:2]
        results = response.json()["results"]
        assert [r["index"] for r in results] == best
        assert [r["document"]["text"] for r in results] == [DOCUMENTS[i] for i in best]
        empty = httpx.post(f"{server.url}/rerank", json={**body, "documents": []},
                           headers=headers, timeout=30)  # fmt: skip
        assert empty.status_code == 400
        assert empty.json()["error"]["param"] == "documents"
        log = server.log()
        assert QUERY not in log
        assert DOCUMENTS[0] not in log


def test_rerank_through_an_upstream_embedgate(
    tmp_path: Path, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    """A real `embedgate serve` whose rerank model is another real `embedgate serve` (the
    `cohere` shape, as vLLM's): the same ranking and scores as asking the engine directly."""
    engine_config = tmp_path / "engine.yaml"
    engine_config.write_text(yaml.safe_dump(
        {"models": rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)}))  # fmt: skip
    engine_env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(engine_config),
                  "EMBEDGATE_WARMUP": "false"}  # fmt: skip
    with start_server(tmp_path / "engine", env=engine_env) as engine:
        engine_key = issue_key(engine.url)
        front_config = tmp_path / "front.yaml"
        remote = {"backend": "openai", "task": "rerank", "base_urls": [f"{engine.url}/v1"],
                  "upstream_model": "cross", "api_key_env": "RERANK_ENGINE_KEY"}  # fmt: skip
        front_config.write_text(yaml.safe_dump({"models": {
            "all-minilm-l6-v2": {"backend": "local", "path": "bundled:all-minilm-l6-v2"},
            "remote-rerank": remote}}))  # fmt: skip
        front_env = {"EMBEDGATE_ADMIN_KEY": ADMIN_KEY, "EMBEDGATE_CONFIG": str(front_config),
                     "RERANK_ENGINE_KEY": engine_key}  # fmt: skip
        with start_server(tmp_path / "front", env=front_env) as front:
            front_key = issue_key(front.url)
            body = {"query": QUERY, "documents": DOCUMENTS}
            direct = httpx.post(
                f"{engine.url}/v1/rerank",
                json={**body, "model": "cross"},
                headers={"Authorization": f"Bearer {engine_key}"},
                timeout=30,
            )
            through = httpx.post(f"{front.url}/v1/rerank", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {front_key}"})  # fmt: skip
            assert through.status_code == 200, through.text
            assert through.json()["model"] == "remote-rerank"  # the default rerank model
            assert through.json()["results"] == direct.json()["results"]
            assert through.json()["usage"] == direct.json()["usage"]  # the engine's count
            assert QUERY not in front.log()
