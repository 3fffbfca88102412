"""The model registry's entries: a public model name and how to serve it.

An entry is a ``LocalModel`` (sentence-transformers in process) or an ``UpstreamModel``
(OpenAI-compatible servers), told apart by ``backend``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

DEFAULT_MODEL = "all-minilm-l6-v2"
BUNDLED_MINILM = "bundled:all-minilm-l6-v2"
QWEN3_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)


class ModelBase(BaseModel):
    """What every registry entry has, whichever backend serves it."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["embed", "rerank"] = Field(
        default="embed",
        description="`embed`: served by /v1/embeddings; `rerank`: by /v1/rerank (docs/rerank.md).",
    )
    family: Literal["auto", "generic", "qwen3", "cross-encoder"] = Field(
        default="auto",
        description="`qwen3` applies Qwen3-Embedding rules (query instruction, last-token "
        "pooling, left padding), or for `task: rerank` Qwen3-Reranker's (yes/no prompt); "
        "`cross-encoder` (rerank only): a sentence-transformers CrossEncoder; `auto` "
        "detects Qwen3 from the model config, else `generic` (embed) or `cross-encoder`.",
    )
    min_dimensions: int = Field(default=32, description="Smallest `dimensions` a client may ask.")
    max_tokens: int | None = Field(
        default=None, description="Longest input in tokens (local: the model's max_seq_length)."
    )
    instructions: bool | None = Field(
        default=None, description="Whether `instruction` is accepted (default: Qwen3 only)."
    )
    default_instruction: str | None = Field(
        default=None, description="Task used for queries when a request names none."
    )
    query_template: str | None = Field(
        default=None, description="How an instruction wraps a query: `{instruction}`, `{text}`."
    )
    aliases: list[str] = Field(default_factory=list, description="Other names for this model.")
    tenants: list[str] | None = Field(
        default=None,
        description="Reserve this model for these tenant ids: no other tenant can list or "
        "call it (dedicated capacity). Default: every tenant whose plan allows it.",
    )

    @model_validator(mode="after")
    def _check_task(self) -> ModelBase:
        if self.task == "embed" and self.family == "cross-encoder":
            raise ValueError("family `cross-encoder` is for `task: rerank` models")
        if self.task == "rerank" and self.family == "generic":
            raise ValueError("a rerank model's family is `qwen3`, `cross-encoder` or `auto`")
        if self.task == "rerank" and self.query_template is not None:
            raise ValueError("`query_template` applies to embedding models only")
        return self


class LocalModel(ModelBase):
    """A sentence-transformers model loaded in the server process."""

    backend: Literal["local"] = Field(default="local", description="In process.")
    path: str = Field(
        description="A model directory, a Hugging Face id (from the local cache), "
        "or `bundled:all-minilm-l6-v2`.",
    )
    device: str | None = Field(default=None, description="Overrides the global device.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="auto = float32 on CPU, bfloat16/float16 on CUDA."
    )

    @model_validator(mode="before")
    @classmethod
    def _check_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if not data.get("path"):
            raise ValueError("a local model needs `path`")
        if data.get("dimensions") is not None:
            raise ValueError("a local model reads `dimensions` from the model; remove it")
        return _without_other_backends_fields(cls, data)


class UpstreamModel(ModelBase):
    """A pool of OpenAI-compatible embedding servers (SGLang, vLLM, TEI, ...), or of rerank
    servers in one of three shapes (``rerank_api``)."""

    backend: Literal["openai"] = Field(default="openai", description="Upstream servers.")
    base_urls: list[str] = Field(description="Base URLs ending in /v1, tried in order.")
    dimensions: int = Field(
        description="The upstream's native output dimensions (a rerank model: leave out)."
    )
    rerank_api: Literal["cohere", "sglang", "tei"] = Field(
        default="cohere",
        description="A rerank model's request shape, at `{base_url}/rerank`: `cohere` (vLLM, "
        "Infinity, LiteLLM, embedgate), `sglang` or `tei` (docs/rerank.md#upstream-engines).",
    )
    upstream_model: str | None = Field(
        default=None, description="Model name the upstream expects (default: public)."
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the upstream key."
    )
    api_key_file: Path | None = Field(default=None, description="File holding the upstream key.")
    timeout: float = Field(default=30.0, description="Seconds per upstream attempt.")
    max_retries: int = Field(
        default=2,
        ge=0,
        description="Extra attempts, on the next URL, after a connect error or "
        "HTTP 429/502/503/504.",
    )
    max_batch_size: int = Field(default=256, description="Most inputs sent upstream at once.")
    tokenizer: str | None = Field(
        default=None, description="Local tokenizer path for exact token counts before forwarding."
    )
    min_in_flight: int = Field(
        default=16, ge=1,
        description="Least inputs in flight per base URL that the adaptive window keeps.",
    )  # fmt: skip
    max_in_flight: int = Field(
        default=2048, ge=1,
        description="Most inputs in flight per base URL: the window grows up to this while "
        "the engine answers as fast as when idle; the rest wait in embedgate's fair queue.",
    )  # fmt: skip

    max_tokens_in_flight: int | None = Field(
        default=None, ge=1,
        description="Most tokens in flight per base URL (counted by `tokenizer`, else "
        "estimated); none by default, where the window in inputs is the only bound.",
    )  # fmt: skip

    @model_validator(mode="before")
    @classmethod
    def _check_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if not data.get("base_urls"):
            raise ValueError("an openai upstream model needs `base_urls`")
        if data.get("task") == "rerank":
            if data.setdefault("dimensions", 1) != 1:
                raise ValueError("a rerank model gives one score per pair: leave out `dimensions`")
        elif data.get("dimensions") is None:
            raise ValueError("an openai upstream model needs `dimensions`")
        elif "rerank_api" in data:
            raise ValueError("`rerank_api` applies to `task: rerank` models only")
        return _without_other_backends_fields(cls, data)

    @model_validator(mode="after")
    def _check_window(self) -> UpstreamModel:
        if self.min_in_flight > self.max_in_flight:
            raise ValueError("min_in_flight must not be above max_in_flight")
        return self


def _backend_of(entry: Any) -> Any:
    return entry.get("backend") if isinstance(entry, dict) else getattr(entry, "backend", None)


ModelSpec = Annotated[
    Annotated[LocalModel, Tag("local")] | Annotated[UpstreamModel, Tag("openai")],
    # A callable discriminator: only with one does pydantic give this message instead of
    # its own about tags, for a missing or unknown `backend` (or an entry that is no mapping).
    Discriminator(
        _backend_of,
        custom_error_type="model_backend",
        custom_error_message="a model is a mapping with `backend: local` or `backend: openai`",
    ),
]


def _without_other_backends_fields(
    cls: type[LocalModel | UpstreamModel], data: dict[str, Any]
) -> dict[str, Any]:
    """Before the split into two classes, a field of the other backend was accepted and
    ignored (a config may set `timeout` on a local model); it still is."""
    other = (LocalModel.model_fields.keys() | UpstreamModel.model_fields.keys()) - (
        cls.model_fields.keys()
    )
    return {key: value for key, value in data.items() if key not in other}


def default_models() -> dict[str, ModelSpec]:
    return {DEFAULT_MODEL: LocalModel(path=BUNDLED_MINILM)}
