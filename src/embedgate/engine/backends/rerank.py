"""In-process rerank models: Qwen3-Reranker (a causal LM asked "yes" or "no") and any
sentence-transformers ``CrossEncoder``.

A rerank input is one token sequence per (query, document) pair, a ``ModelInput`` like an
embedding's, so the batch scheduler serves pairs unchanged (fair queuing, express lane,
pipeline, cost in tokens); ``embed`` answers one 1-wide row per pair: its relevance score.
Like ``LocalBackend`` (both are ``InProcessBackend``s): two single-thread lanes,
tokenization off the inference threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedgate.config.models import LocalModel
from embedgate.engine.backends.base import BackendInfo, Embedded, ModelInput, Vectors
from embedgate.engine.backends.decoding import TokenDecoder
from embedgate.engine.backends.devices import pick_device, pick_dtype
from embedgate.engine.backends.inprocess import InProcessBackend
from embedgate.engine.backends.local import detect_family, resolve_model_path
from embedgate.engine.backends.rerank_prompts import PairEncoder, Qwen3Prompt, pad_pairs
from embedgate.engine.backends.tokenizing import TokenizerRunner

log = logging.getLogger("embedgate.engine.backends.rerank")

QWEN3_RERANK_MAX_TOKENS = 8192  # the model card's max_length


def detect_rerank_family(path: str, declared: str) -> str:
    return detect_family(path, declared, otherwise="cross-encoder")


class RerankBackend(InProcessBackend):
    """A rerank model on the two lanes of ``InProcessBackend``, as ``LocalBackend`` runs
    embedders."""

    def __init__(self, name: str, spec: LocalModel, *, device: str, warmup: bool) -> None:
        super().__init__(name, spec, device=device, warmup=warmup)
        self._activation: Any = None  # a CrossEncoder's, on its logits
        self._prompt: Qwen3Prompt | None = None
        self._pairs: PairEncoder | None = None

    async def start(self) -> None:
        await self._on_lane(0, self._load)
        if self._warmup:
            await self.embed(await self.tokenize_pairs("warm-up", ["warm-up"], None, None))

    def _runners(self) -> Sequence[Any]:
        return (*super()._runners(), self._pairs)

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
        encoded = await self._pairs(query, documents, truncate_to, tenant)
        return [ModelInput(None, ids, len(ids), second) for ids, second in encoded]

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        scores = await self._on_lane(lane, self._forward, list(inputs))
        return Embedded(scores, sum(item.n_tokens for item in inputs))

    def health(self) -> dict[str, Any]:
        return {**super().health(), "task": "rerank"}

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
