"""The model registry's entries: a public model name and how to serve it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MODEL = "all-minilm-l6-v2"
BUNDLED_MINILM = "bundled:all-minilm-l6-v2"
QWEN3_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"
QWEN3_DEFAULT_INSTRUCTION = (
    "Given a web search query, retrieve relevant passages that answer the query"
)


class ModelSpec(BaseModel):
    """One entry of the model registry: a public model name and how to serve it."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "openai"] = Field(
        description="`local`: sentence-transformers in process; `openai`: an upstream server."
    )
    path: str | None = Field(
        default=None,
        description="local: a model directory, a Hugging Face id (from the local cache), "
        "or `bundled:all-minilm-l6-v2`.",
    )
    family: Literal["auto", "generic", "qwen3"] = Field(
        default="auto",
        description="`qwen3` applies Qwen3-Embedding rules (query instruction, last-token "
        "pooling, left padding); `auto` detects Qwen3 from the model config.",
    )
    dimensions: int | None = Field(
        default=None, description="openai: the upstream's native output dimensions."
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
    device: str | None = Field(default=None, description="local: overrides the global device.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="local: auto = float32 on CPU, bfloat16/float16 on CUDA."
    )
    # upstream (backend: openai)
    base_urls: list[str] = Field(
        default_factory=list, description="openai: base URLs ending in /v1, tried in order."
    )
    upstream_model: str | None = Field(
        default=None, description="openai: model name the upstream expects (default: public)."
    )
    api_key_env: str | None = Field(
        default=None, description="openai: environment variable holding the upstream key."
    )
    api_key_file: Path | None = Field(
        default=None, description="openai: file holding the upstream key."
    )
    timeout: float = Field(default=30.0, description="openai: seconds per upstream attempt.")
    max_retries: int = Field(
        default=2,
        ge=0,
        description="openai: extra attempts, on the next URL, after a connect error or "
        "HTTP 429/502/503/504.",
    )
    max_batch_size: int = Field(
        default=256, description="openai: most inputs sent upstream in one request."
    )
    tokenizer: str | None = Field(
        default=None,
        description="openai: local tokenizer path for exact token counts before forwarding.",
    )
    tenants: list[str] | None = Field(
        default=None,
        description="Reserve this model for these tenant ids: no other tenant can list or "
        "call it (dedicated capacity). Default: every tenant whose plan allows it.",
    )

    @model_validator(mode="after")
    def _check_backend_fields(self) -> ModelSpec:
        if self.backend == "local" and not self.path:
            raise ValueError("a local model needs `path`")
        if self.backend == "local" and self.dimensions is not None:
            raise ValueError("a local model reads `dimensions` from the model; remove it")
        if self.backend == "openai":
            if not self.base_urls:
                raise ValueError("an openai upstream model needs `base_urls`")
            if self.dimensions is None:
                raise ValueError("an openai upstream model needs `dimensions`")
        return self


def default_models() -> dict[str, ModelSpec]:
    return {DEFAULT_MODEL: ModelSpec(backend="local", path=BUNDLED_MINILM)}
