"""`task: rerank` in the model registry: what a config may and may not say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from embedgate.config.models import LocalModel
from embedgate.config.settings import Settings
from embedgate.engine.backends.rerank import detect_rerank_family

MINILM = {"backend": "local", "path": "bundled:all-minilm-l6-v2"}


def settings(tmp_path: Path, **models: Any) -> Settings:
    return Settings(data_dir=tmp_path, models={"all-minilm-l6-v2": MINILM, **models})


def test_task_defaults_to_embed_and_accepts_rerank() -> None:
    assert LocalModel(path="x").task == "embed"
    assert LocalModel(path="x", task="rerank", family="cross-encoder").task == "rerank"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "classify"}, "task"),
        ({"task": "embed", "family": "cross-encoder"}, "for `task: rerank` models"),
        ({"task": "rerank", "family": "generic"}, "a rerank model's family"),
        ({"task": "rerank", "query_template": "{text}"}, "embedding models only"),
    ],
)
def test_invalid_local_entries(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LocalModel(path="x", **entry)


def test_a_rerank_upstream_has_one_score_per_pair(tmp_path: Path) -> None:
    upstream = {"backend": "openai", "base_urls": ["http://x/v1"], "task": "rerank",
                "rerank_api": "tei"}  # fmt: skip
    assert settings(tmp_path, up=upstream).models["up"].dimensions == 1
    with pytest.raises(ValidationError, match="one score per pair"):
        settings(tmp_path, up={**upstream, "dimensions": 768})


def test_the_default_model_must_embed(tmp_path: Path) -> None:
    rerank = {"backend": "local", "path": "x", "task": "rerank", "aliases": ["r"]}
    with pytest.raises(ValidationError, match="is a rerank model"):
        Settings(data_dir=tmp_path, models={"rr": rerank}, default_model="r")


def test_family_detection(tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path) -> None:
    assert detect_rerank_family(str(tiny_reranker_dir), "auto") == "qwen3"
    assert detect_rerank_family(str(tiny_cross_encoder_dir), "auto") == "cross-encoder"
    assert detect_rerank_family(str(tiny_reranker_dir), "cross-encoder") == "cross-encoder"
