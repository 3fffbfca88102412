"""What the in-process backends (embedding models, rerank models) share: two single-thread
lanes, the tokenizer runners, and the model's state for ``info`` and ``health``.

Lane 0 runs the scheduler's batches one after another in the order they were handed over
(``pipelined``: the next one may wait queued behind the running one), lane 1 at most one
small express batch beside it (engine/scheduler.py). The model is loaded on lane 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from embedgate.config.models import LocalModel
from embedgate.engine.backends.base import BackendInfo
from embedgate.engine.backends.decoding import TokenDecoder
from embedgate.engine.backends.devices import gpu_memory
from embedgate.engine.backends.tokenizing import TokenizerRunner

T = TypeVar("T")


class InProcessBackend:
    coalesce = True
    lanes = 2  # a batch, and beside it an express batch
    pipelined = True

    def __init__(self, name: str, spec: LocalModel, *, device: str, warmup: bool) -> None:
        self.name = name
        self._spec = spec
        self._device_setting = spec.device or device
        self._warmup = warmup
        self._lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"embedgate-infer-{name}-{lane}")
            for lane in range(self.lanes)
        ]
        self._model: Any = None
        self._tokenizer: TokenizerRunner | None = None
        self._decoder: TokenDecoder | None = None
        self._pad_id = 0
        self._info: BackendInfo | None = None
        self._device = "unloaded"
        self._dtype = "unloaded"

    @property
    def info(self) -> BackendInfo:
        if self._info is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._info

    async def aclose(self) -> None:
        for executor in self._lanes:
            executor.shutdown(wait=True, cancel_futures=True)
        for runner in self._runners():
            if runner is not None:
                runner.close()
        self._model = None

    def can_tokenize(self) -> bool:
        return True

    async def tokenize(
        self, texts: Sequence[str], truncate_to: int | None, tenant: str = ""
    ) -> list[list[int]]:
        assert self._tokenizer is not None, "backend not started"
        return await self._tokenizer(texts, truncate_to, tenant)

    async def decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        assert self._decoder is not None, "backend not started"
        return await self._decoder(id_lists)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": "local",
            "ready": self._model is not None,
            "device": self._device,
            "dtype": self._dtype,
        }
        if self._device.startswith("cuda"):
            out["gpu_memory"] = gpu_memory(self._device)
        return out

    async def _on_lane(self, lane: int, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._lanes[lane], work, *args)

    def _runners(self) -> Sequence[TokenizerRunner | TokenDecoder | Any | None]:
        """What to close with the backend: its tokenizer threads."""
        return (self._tokenizer, self._decoder)
