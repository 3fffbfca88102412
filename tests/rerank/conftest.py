"""Tiny rerankers, and an app serving them beside the default embedding model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.rerank_tiny import build_tiny_cross_encoder, build_tiny_qwen3_reranker


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_reranker(tmp_path_factory.mktemp("qwen3-reranker") / "tiny")


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder") / "tiny")


def rerank_models(qwen3: Path, cross: Path) -> dict[str, Any]:
    return {
        "all-minilm-l6-v2": {"backend": "local", "path": "bundled:all-minilm-l6-v2"},
        "qwen3-rerank": {"backend": "local", "path": str(qwen3), "task": "rerank"},
        "cross": {"backend": "local", "path": str(cross), "task": "rerank",
                  "aliases": ["cross-alias"]},
    }  # fmt: skip


@pytest.fixture
def rerank_app(
    app_factory: Callable[..., Any], tiny_reranker_dir: Path, tiny_cross_encoder_dir: Path
) -> Callable[..., Any]:
    async def start(**overrides: Any) -> Any:
        models = rerank_models(tiny_reranker_dir, tiny_cross_encoder_dir)
        return await app_factory(**{"models": models, "warmup": False, **overrides})

    return start
