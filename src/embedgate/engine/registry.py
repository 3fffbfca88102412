"""The model registry: public names and aliases -> a started backend and its scheduler."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from embedgate.config.models import QWEN3_DEFAULT_INSTRUCTION, QWEN3_QUERY_TEMPLATE, ModelSpec
from embedgate.config.settings import Settings
from embedgate.engine.backends import create_backend
from embedgate.engine.backends.base import Backend, BackendInfo
from embedgate.engine.backends.upstream import UpstreamBackend
from embedgate.engine.dispatch import UpstreamScheduler
from embedgate.engine.scheduler import BURST_BATCHES, BatchScheduler, Scheduler
from embedgate.errors import EmbedgateError
from embedgate.observability.metrics import Metrics

log = logging.getLogger("embedgate.registry")

# Padded tokens per batch. A CPU is saturated by ~1k tokens, so more only adds padding
# (measured with bench/throughput.py); a GPU needs large batches to be busy.
CPU_BATCH_TOKENS = 1024
GPU_BATCH_TOKENS = 16384


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    spec: ModelSpec
    backend: Backend
    scheduler: Scheduler
    created: int

    @property
    def info(self) -> BackendInfo:
        return self.backend.info

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def dimensions(self) -> int:
        # local: read from the model; openai: the entry's `dimensions` (UpstreamBackend.info)
        return self.info.dimensions

    @property
    def max_tokens(self) -> int:
        return self.spec.max_tokens or self.info.max_tokens

    @property
    def supports_instructions(self) -> bool:
        if self.task == "rerank":  # only Qwen3-Reranker's prompt has a place for one
            return self.info.family == "qwen3" and self.spec.instructions is not False
        if self.spec.instructions is not None:
            return self.spec.instructions
        return self.info.family == "qwen3" or self.spec.query_template is not None

    @property
    def query_template(self) -> str:
        return self.spec.query_template or QWEN3_QUERY_TEMPLATE

    def visible_to(self, tenant: str) -> bool:
        return self.spec.tenants is None or tenant in self.spec.tenants

    @property
    def default_instruction(self) -> str | None:
        if self.spec.default_instruction is not None:
            return self.spec.default_instruction
        return QWEN3_DEFAULT_INSTRUCTION if self.info.family == "qwen3" else None


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._models: dict[str, ServedModel] = {}
        self._names: dict[str, str] = {}
        metrics.watch_queues(self.queue_depths)
        metrics.watch_upstreams(self.upstreams)

    async def start(self) -> None:
        for name, spec in self._settings.models.items():
            backend = create_backend(name, spec, self._settings)
            await backend.start()
            scheduler = self._scheduler(name, backend)
            self._models[name] = ServedModel(name, spec, backend, scheduler, int(time.time()))
            await scheduler.start()
            for alias in [name, *spec.aliases]:
                self._names[alias] = name
            log.info("model %s ready (%d dims)", name, self._models[name].dimensions)

    async def aclose(self) -> None:
        for served in self._models.values():
            await served.scheduler.aclose()
            await served.backend.aclose()

    def resolve(self, name: str | None) -> ServedModel:
        key = self._settings.default_model if name is None else name
        canonical = self._names.get(key)
        if canonical is None:
            raise self.not_found(key)
        return self._models[canonical]

    def resolve_for(self, tenant: str, name: str | None) -> ServedModel:
        """A model this tenant may see: a model reserved for other tenants does not exist."""
        served = self.resolve(name)
        if not served.visible_to(tenant):
            raise self.not_found(self._settings.default_model if name is None else name)
        return served

    @staticmethod
    def not_found(name: str) -> EmbedgateError:
        return EmbedgateError(
            404, f"The model `{name}` does not exist or you do not have access to it.",
            param="model", code="model_not_found",
        )  # fmt: skip

    def all(self) -> list[ServedModel]:
        return list(self._models.values())

    def upstreams(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Upstream model -> base URL -> its health, window, in flight, latency, errors."""
        return {name: served.backend.pool.status() for name, served in self._models.items()
                if isinstance(served.backend, UpstreamBackend)}  # fmt: skip

    def queue_depths(self) -> dict[str, int]:
        return {name: served.scheduler.queue_depth for name, served in self._models.items()}

    def _scheduler(self, name: str, backend: Backend) -> Scheduler:
        s = self._settings
        if isinstance(backend, UpstreamBackend):
            return UpstreamScheduler(
                name, backend, self._metrics,
                max_batch_size=backend.batch_size, max_queue=s.max_queue_inputs,
                fair=s.scheduling == "fair", burst_tokens=BURST_BATCHES * CPU_BATCH_TOKENS,
            )  # fmt: skip
        on_cpu = backend.info.device == "cpu"
        budget = s.max_batch_tokens or (CPU_BATCH_TOKENS if on_cpu else GPU_BATCH_TOKENS)
        return BatchScheduler(
            name, backend, self._metrics,
            max_batch_size=s.max_batch_size, max_batch_tokens=budget,
            wait_s=s.batch_wait_ms / 1000, max_queue=s.max_queue_inputs,
            fair=s.scheduling == "fair",
        )  # fmt: skip
