"""A fake model backend for fast tests of everything above the model: the ``Backend``
protocol (``engine/backends/base.py``) with deterministic vectors and no model to load."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedgate.engine.backends.base import BackendInfo, Embedded, ModelInput
from embedgate.engine.endpoints import EndpointPool, WindowConfig


class RecordingBackend:
    """Deterministic vectors (first component = the input's first token id), batches recorded
    (token counts in ``batches``, first token ids in ``ids``).

    ``gate`` holds inference until the test releases it, to build up a queue on purpose."""

    coalesce = True
    lanes = 1
    pipelined = False

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.ids: list[list[int]] = []
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    @property
    def info(self) -> BackendInfo:
        return BackendInfo(
            dimensions=4, max_tokens=512, family="generic", vocab_size=None, device="cpu"
        )

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        self.batches.append([item.n_tokens for item in inputs])
        self.ids.append([(item.token_ids or [0])[0] for item in inputs])
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        rows = [[float((item.token_ids or [0])[0]), 1.0, 0.0, 0.0] for item in inputs]
        return Embedded(np.asarray(rows, dtype=np.float32), sum(i.n_tokens for i in inputs))

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...
    def can_tokenize(self) -> bool:
        return True

    async def tokenize(self, texts: Sequence[str], truncate_to: int | None) -> list[list[int]]:
        return [[len(t)] for t in texts]

    def health(self) -> dict[str, Any]:
        return {"ready": True}


class FakeUpstream(RecordingBackend):
    """The same, as an upstream engine at one URL (``UpstreamEngine``): for the upstream
    scheduler, without HTTP."""

    max_retries = 0

    def __init__(self, delay: float = 0.0, window: int = 64) -> None:
        super().__init__(delay)
        self.pool = EndpointPool(["http://fake/v1"], WindowConfig(1, window, window))

    async def embed_at(self, url: str, inputs: Sequence[ModelInput]) -> Embedded:
        return await self.embed(inputs)


class PipelinedBackend(RecordingBackend):
    """The same with the in-process model's lanes: lane 0 runs its calls one after another
    in the order they came (``pipelined``), lane 1 beside it. ``handed`` counts the calls
    made on lane 0, running or queued; ``batches`` records them as they start to run."""

    lanes = 2
    pipelined = True

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay)
        self.handed = 0
        self._lane0 = asyncio.Lock()  # FIFO: calls run in the order they were made

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        if lane != 0:
            return await super().embed(inputs, lane=lane)
        self.handed += 1
        async with self._lane0:
            return await super().embed(inputs, lane=lane)
