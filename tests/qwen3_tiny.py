"""Build a tiny, random Qwen3 embedding model laid out like ``Qwen/Qwen3-Embedding-0.6B``.

The real model cannot be downloaded in tests, so :func:`build_tiny_qwen3` reproduces its
*structure* on the fly (in well under a second once torch/transformers are imported):

* a byte-level BPE tokenizer (Qwen2-style pre-tokenisation) whose post-processor appends
  ``<|endoftext|>`` to every sequence, with ``<|endoftext|>`` as eos and pad token and left
  padding;
* a randomly initialised ``Qwen3Model`` (2 layers, grouped-query attention), saved as
  safetensors;
* the sentence-transformers files: Transformer -> last-token Pooling -> Normalize, plus the
  ``query``/``document`` prompts and cosine similarity.

The weights are random, so the embeddings carry no meaning, but they are deterministic for a
given ``seed`` and exercise exactly the same code paths (left padding, appended eos token,
last-token pooling, prompts) as the real model.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

__all__ = ["EOS_TOKEN", "QUERY_PROMPT", "build_tiny_qwen3"]

EOS_TOKEN = "<|endoftext|>"
QUERY_PROMPT = (
    "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
)
MAX_LENGTH = 512
_BPE_VOCAB_SIZE = 768  # upper bound; the 256 byte symbols plus merges learnt from the corpus

# Pre-tokenisation regex of the Qwen2/Qwen3 tokenizer.
_QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "Instruct: Given a web search query, retrieve relevant passages that answer the query",
    "Query: how do vaccines train the immune system?",
    "Vaccines expose the immune system to a harmless piece of a pathogen.",
    "Embedding models map text to dense vectors for semantic search.",
    "Cosine similarity measures the angle between two vectors.",
    "The weather is lovely today, so we are going to the park.",
    "It's so sunny outside! Let's have a picnic by the river.",
    "He drove to the stadium to watch the football match.",
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "Machine learning systems need large amounts of training data.",
    "Python is a popular programming language for data science.",
    "The server returned an error: 429 Too Many Requests.",
    "Please send the report by Friday, 5 p.m. at the latest.",
    "She has been reading books about ancient Roman history.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The recipe calls for two cups of flour and three eggs.",
    "How many tokens can this model process in a single request?",
    "Rate limits protect shared infrastructure from noisy neighbours.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "The museum opens at nine o'clock every morning except Monday.",
    "Our team released version 2.3.1 with several bug fixes.",
    "I'd like a cup of coffee with milk, please.",
    "They're planning a trip to the mountains next summer.",
    "The cat sat quietly on the warm windowsill.",
    "Interest rates were raised by a quarter of a percentage point.",
    "Tokenizers split text into subword units before encoding.",
    "Multi-tenant gateways route requests to the right model.",
    "Summarize the following document in three sentences.",
    "The library will be closed for renovation until March.",
    "Astronomers discovered a new planet orbiting a distant star.",
    "Fresh vegetables are sold at the market every Saturday.",
    "Don't forget to water the plants while I'm away.",
    "我喜欢在周末去公园散步。",
    "今天天气很好\uff0c我们去海边吧。",  # \uff0c: fullwidth comma (RUF001)
    "北京是中国的首都。",
    "机器学习模型需要大量的训练数据。",
    "请问这个模型可以处理中文吗\uff1f",  # \uff1f: fullwidth question mark
)


def _build_backend_tokenizer() -> Tokenizer:
    """Train a small byte-level BPE on :data:`_CORPUS` with Qwen-style pre/post-processing."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        # Seed all 256 byte symbols so that any text (e.g. unseen Chinese characters) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    # Like Qwen, the special token comes after the regular vocabulary.
    tokenizer.add_special_tokens([EOS_TOKEN])
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    # Qwen3-Embedding appends <|endoftext|> to every sequence; last-token pooling reads it.
    tokenizer.post_processor = TemplateProcessing(
        single=f"$A:0 {EOS_TOKEN}:0",
        pair=f"$A:0 {EOS_TOKEN}:0 $B:1 {EOS_TOKEN}:1",
        special_tokens=[(EOS_TOKEN, eos_id)],
    )
    return tokenizer


def _write_json(path: pathlib.Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_sentence_transformers_files(path: pathlib.Path, hidden_size: int) -> None:
    _write_json(
        path / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
    )
    _write_json(
        path / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": hidden_size,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": False,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": True,
            "include_prompt": True,
        },
    )
    (path / "2_Normalize").mkdir(parents=True, exist_ok=True)
    _write_json(
        path / "sentence_bert_config.json", {"max_seq_length": MAX_LENGTH, "do_lower_case": False}
    )
    _write_json(
        path / "config_sentence_transformers.json",
        {
            "prompts": {"query": QUERY_PROMPT, "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def build_tiny_qwen3(path: pathlib.Path, *, hidden_size: int = 64, seed: int = 0) -> pathlib.Path:
    """Write a tiny random Qwen3 embedding model (sentence-transformers layout) to ``path``.

    Args:
        path: Target directory; created if missing. Existing files with the same names are
            overwritten.
        hidden_size: Model width and embedding dimension; must be a multiple of 4
            (4 attention heads of ``hidden_size // 4`` dims each).
        seed: Seed for the random weights. The same seed gives identical weights, and thus
            identical embeddings. The global torch RNG state is left untouched.

    Returns:
        ``path``, for convenience.
    """
    if hidden_size <= 0 or hidden_size % 4:
        raise ValueError(f"hidden_size must be a positive multiple of 4, got {hidden_size}")
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)

    backend = _build_backend_tokenizer()
    eos_id = backend.token_to_id(EOS_TOKEN)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        padding_side="left",
        model_max_length=MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.save_pretrained(str(path))

    config = Qwen3Config(
        vocab_size=backend.get_vocab_size(with_added_tokens=True),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden_size // 4,
        max_position_embeddings=MAX_LENGTH,
        max_window_layers=2,
        tie_word_embeddings=True,
        pad_token_id=eos_id,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3Model(config)
        # ``pad_token_id`` makes the embedding row of <|endoftext|> start at zero. Every sequence
        # ends with that token, so give it a random (non-zero) vector like the real model has;
        # otherwise the empty string would embed to the zero vector.
        with torch.no_grad():
            model.embed_tokens.weight[eos_id].normal_(mean=0.0, std=config.initializer_range)
    model.save_pretrained(str(path), safe_serialization=True)

    _write_sentence_transformers_files(path, hidden_size)
    return path
