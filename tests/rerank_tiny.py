"""Build tiny random rerankers laid out like the real ones (nothing can be downloaded here).

* :func:`build_tiny_qwen3_reranker`: a ``Qwen3ForCausalLM`` (the Qwen3-Reranker layout) with
  a byte-level BPE tokenizer, trained on the corpus of ``tests/qwen3_tiny.py``, that has
  ``yes``, ``no`` and the chat tokens (``<|im_start|>``, ``<|im_end|>``, ``<think>``,
  ``</think>``) as single tokens and, like Qwen3-Reranker's, adds no special tokens of its
  own; left padding.
* :func:`build_tiny_cross_encoder`: a ``BertForSequenceClassification`` with one label and a
  WordPiece tokenizer (``[CLS] a [SEP] b [SEP]``, token types 0/1), saved by
  sentence-transformers as a ``CrossEncoder``.

Random weights, deterministic for a given ``seed``; the global torch RNG is left untouched.
"""

from __future__ import annotations

import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from tests.qwen3_tiny import _CORPUS, _build_backend_tokenizer

__all__ = ["CHAT_TOKENS", "build_tiny_cross_encoder", "build_tiny_qwen3_reranker"]

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]
PAD_TOKEN = "<|endoftext|>"
MAX_LENGTH = 512


def _reranker_tokenizer() -> Tokenizer:
    tokenizer = _build_backend_tokenizer()
    tokenizer.post_processor = None  # Qwen3-Reranker's tokenizer appends nothing
    tokenizer.add_tokens(["yes", "no"])  # single tokens, as in the real vocabulary
    tokenizer.add_special_tokens(CHAT_TOKENS)
    return tokenizer


def build_tiny_qwen3_reranker(
    path: pathlib.Path, *, hidden_size: int = 64, seed: int = 0
) -> pathlib.Path:
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    backend = _reranker_tokenizer()
    pad_id = backend.token_to_id(PAD_TOKEN)
    PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token=PAD_TOKEN,
        padding_side="left", model_max_length=MAX_LENGTH, clean_up_tokenization_spaces=False,
    ).save_pretrained(str(path))  # fmt: skip
    config = Qwen3Config(
        vocab_size=backend.get_vocab_size(with_added_tokens=True), hidden_size=hidden_size,
        intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=hidden_size // 4, max_position_embeddings=MAX_LENGTH,
        max_window_layers=2, tie_word_embeddings=False, pad_token_id=pad_id,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
        with torch.no_grad():  # spread the scores: sizeable "yes"/"no" logits
            for token in ("yes", "no"):
                model.lm_head.weight[backend.token_to_id(token)].normal_(mean=0.0, std=0.2)
    model.save_pretrained(str(path), safe_serialization=True)
    return path


def _wordpiece(path: pathlib.Path) -> BertTokenizerFast:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=special, show_progress=False)
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )  # fmt: skip
    return BertTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", sep_token="[SEP]",
        pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        model_max_length=MAX_LENGTH,
    )  # fmt: skip


def build_tiny_cross_encoder(
    path: pathlib.Path, *, hidden_size: int = 32, seed: int = 0
) -> pathlib.Path:
    from sentence_transformers import CrossEncoder

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _wordpiece(path)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=2 * hidden_size,
        max_position_embeddings=MAX_LENGTH, num_labels=1, type_vocab_size=2,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
        with torch.no_grad():  # spread the scores; token types must matter
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(mean=0.0, std=0.3)
            model.bert.embeddings.token_type_embeddings.weight.normal_(mean=0.0, std=1.0)
    raw = path / "hf"
    model.save_pretrained(str(raw), safe_serialization=True)
    tokenizer.save_pretrained(str(raw))
    CrossEncoder(str(raw), device="cpu").save_pretrained(str(path))
    return path
