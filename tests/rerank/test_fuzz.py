"""schemathesis on the rerank operations, with rerank models loaded: whatever the body,
nothing answers 5xx and every error is the OpenAI envelope (the checks of
tests/api/test_hostile_fuzz.py, whose app has no rerank model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.python import asgi

from embedgate.app import create_app
from tests.api.test_hostile_fuzz import ADMIN, CONFIG, Target, check
from tests.conftest import make_settings
from tests.rerank.conftest import rerank_models


@pytest.fixture
def rerank_target(tmp_path: Path, tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path) -> Target:
    models = rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)
    app = create_app(make_settings(tmp_path / "data", warmup=False, models=models))
    with asgi.get_client(app) as client:  # starts the app's lifespan
        client.post("/admin/tenants", json={"id": "acme"}, headers=ADMIN).raise_for_status()
        key = client.post("/admin/tenants/acme/keys", json={}, headers=ADMIN).json()["key"]
    return Target(app, {"Authorization": f"Bearer {key}"})


@pytest.fixture
def rerank_schema(rerank_target: Target) -> Any:
    config = schemathesis.Config.from_dict({**CONFIG, "generation": {
        **CONFIG["generation"], "max-examples": 40}})  # fmt: skip
    return schemathesis.openapi.from_asgi("/openapi.json", rerank_target.app, config=config)


rerank_api = schemathesis.pytest.from_fixture("rerank_schema").include(path_regex=r"rerank$")


@rerank_api.parametrize()
def test_rerank_fuzz(case: schemathesis.Case, rerank_target: Target) -> None:
    check(case, case.call(headers=rerank_target.headers))
