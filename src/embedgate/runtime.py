"""The heavy, long-lived resources of one app, built and torn down by its lifespan."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from embedgate.config import Settings
from embedgate.keyfiles import ensure_data_dir, load_admin_key
from embedgate.services.embeddings import EmbeddingService
from embedgate.services.metrics import Metrics
from embedgate.services.registry import ModelRegistry
from embedgate.storage.base import StateStore
from embedgate.storage.sql import SqlStateStore

log = logging.getLogger("embedgate")


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    metrics: Metrics
    registry: ModelRegistry
    embeddings: EmbeddingService
    store: StateStore
    admin_key: str

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Runtime:
        if settings.torch_threads is not None:
            import torch

            torch.set_num_threads(settings.torch_threads)
        ensure_data_dir(settings.data_dir)
        admin_key = load_admin_key(settings)
        url = settings.database_url.get_secret_value() if settings.database_url else None
        store = await SqlStateStore.open(url, settings.data_dir)
        registry = ModelRegistry(settings, metrics)
        try:
            await registry.start()
        except BaseException:
            await registry.aclose()
            await store.aclose()
            raise
        embeddings = EmbeddingService(registry, settings, metrics)
        return cls(settings, metrics, registry, embeddings, store, admin_key)

    async def aclose(self) -> None:
        await self.registry.aclose()
        await self.store.aclose()
