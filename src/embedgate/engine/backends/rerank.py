"""In-process rerank models: Qwen3-Reranker (a causal LM asked "yes" or "no") and any
sentence-transformers ``CrossEncoder``.

A rerank input is one token sequence per (query, document) pair, a ``ModelInput`` like an
embedding's, so the batch scheduler serves pairs unchanged (fair queuing, express lane,
pipeline, cost in tokens); ``embed`` answers one 1-wide row per pair: its relevance score.
Like ``LocalBackend``: two single-thread lanes, tokenization off the inference threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from embedgate.config.models import LocalModel
from embedgate.engine.backends.base import BackendInfo, Embedded, ModelInput, Vectors
from embedgate.engine.backends.decoding import TokenDecoder
from embedgate.engine.backends.devices import gpu_memory, pick_device, pick_dtype
from embedgate.engine.backends.local import resolve_model_path
from embedgate.engine.backends.rerank_prompts import PairEncoder, Qwen3Prompt, pad_pairs
from embedgate.engine.backends.tokenizing import TokenizerRunner

log = logging.getLogger("embedgate.engine.backends.rerank")

QWEN3_RERANK_MAX_TOKENS = 8192  # the model card's max_length


def detect_rerank_family(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    from transformers import AutoConfig

    model_type = getattr(AutoConfig.from_pretrained(path), "model_type", "")
    return "qwen3" if str(model_type).startswith("qwen3") else "cross-encoder"


class RerankBackend:
    """A rerank model on two worker threads (lanes), as ``LocalBackend`` runs embedders."""

    coalesce = True
    lanes = 2
    pipelined = True

    def __init__(self, name: str, spec: LocalModel, *, device: str, warmup: bool) -> None:
        self.name = name
        self._spec = spec
        self._device_setting = spec.device or device
        self._warmup = warmup
        self._lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"embedgate-rerank-{name}-{lane}")
            for lane in range(self.lanes)
        ]
        self._model: Any = None
        self._activation: Any = None  # a CrossEncoder's, on its logits
        self._prompt: Qwen3Prompt | None = None
        self._pairs: PairEncoder | None = None
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._lanes[0], self._load)
        if self._warmup:
            await self.embed(await self.tokenize_pairs("warm-up", ["warm-up"], None, None))

    async def aclose(self) -> None:
        for executor in self._lanes:
            executor.shutdown(wait=True, cancel_futures=True)
        for runner in (self._tokenizer, self._decoder, self._pairs):
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

    async def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None,
        truncate_to: int | None, tenant: str = "",
    ) -> list[ModelInput]:  # fmt: skip
        """One model input per (query, document), each at most ``truncate_to`` tokens long
        when set (the model's own truncation rule), else whole."""
        if self._prompt is not None:
            assert self._tokenizer is not None, "backend not started"
            texts = [self._prompt.pair(instruction, query, doc) for doc in documents]
            room = None if truncate_to is None else self._prompt.room(truncate_to)
            return [self._prompt.wrap(ids) for ids in await self._tokenizer(texts, room, tenant)]
        assert self._pairs is not None, "backend not started"
        encoded = await self._pairs(query, documents, truncate_to)
        return [ModelInput(None, ids, len(ids), second) for ids, second in encoded]

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._lanes[lane], self._forward, list(inputs))
        return Embedded(scores, sum(item.n_tokens for item in inputs))

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "local", "task": "rerank",
                               "ready": self._model is not None, "device": self._device,
                               "dtype": self._dtype}  # fmt: skip
        if self._device.startswith("cuda"):
            out["gpu_memory"] = gpu_memory(self._device)
        return out

    def _load(self) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = resolve_model_path(self._spec.path)
        family = detect_rerank_family(path, self._spec.family)
        self._device = pick_device(self._device_setting)
        dtype = pick_dtype(self._spec.dtype, self._device)
        self._dtype = str(dtype).removeprefix("torch.")
        tokenizer, limit = (self._load_qwen3 if family == "qwen3" else self._load_cross)(
            path, dtype
        )
        self._pad_id = int(tokenizer.pad_token_id or 0)
        self._tokenizer = TokenizerRunner(tokenizer, self.name)
        self._decoder = TokenDecoder(tokenizer, self.name)
        self._info = BackendInfo(
            dimensions=1, max_tokens=self._spec.max_tokens or limit, family=family,
            vocab_size=int(self._model.get_input_embeddings().num_embeddings),
            device=self._device,
        )  # fmt: skip
        log.info("loaded rerank model %s (%s) on %s/%s", self.name, family, self._device,
                 self._dtype)  # fmt: skip

    def _load_qwen3(self, path: str, dtype: Any) -> tuple[Any, int]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        self._model = model.to(self._device).eval()
        self._prompt = Qwen3Prompt(tokenizer)
        return tokenizer, min(QWEN3_RERANK_MAX_TOKENS, int(tokenizer.model_max_length))

    def _load_cross(self, path: str, dtype: Any) -> tuple[Any, int]:
        from sentence_transformers import CrossEncoder

        encoder = CrossEncoder(path, device=self._device, model_kwargs={"torch_dtype": dtype})
        if int(encoder.num_labels) != 1:
            raise ValueError(f"model {self.name}: a rerank CrossEncoder has one label, "
                             f"not {encoder.num_labels}")  # fmt: skip
        self._model = encoder.transformers_model
        self._model.eval()
        self._activation = encoder.activation_fn
        self._pairs = PairEncoder(encoder.tokenizer, self.name)
        types = int(getattr(self._model.config, "type_vocab_size", 1) or 1)
        self._pairs.token_types = types > 1
        return encoder.tokenizer, int(encoder.max_seq_length or 512)

    def _forward(self, inputs: list[ModelInput]) -> Vectors:
        import torch

        arrays = pad_pairs(inputs, self._pad_id, left=self._prompt is not None)
        features = {key: torch.from_numpy(value).to(self._device) for key, value in arrays.items()}
        if self._pairs is not None and not self._pairs.token_types:
            features.pop("token_type_ids")
        with torch.inference_mode():
            if self._prompt is not None:
                logits = self._model(**features, logits_to_keep=1).logits[:, -1, :]
                scores = self._prompt.score(logits)
            else:
                scores = self._activation(self._model(**features).logits[:, 0])
        out: Vectors = scores.float().cpu().numpy().astype(np.float32, copy=False)
        return out.reshape(-1, 1)
