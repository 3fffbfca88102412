"""POST /v1/rerank: the Cohere/Jina request and response shapes (as vLLM and LiteLLM serve
them), plus `instruction`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

DOCUMENT_SHAPES = 'each document must be a non-empty string or an object {"text": string}'


def document_text(value: Any, index: int) -> str:
    if isinstance(value, dict) and set(value) == {"text"}:
        value = value["text"]
    if not isinstance(value, str):
        raise ValueError(f"documents[{index}]: {DOCUMENT_SHAPES}")
    if not value:
        raise ValueError(f"documents[{index}] is an empty string")
    return value


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = Field(
        default=None, description="Rerank model name or alias; the server's first rerank "
        "model when omitted.",
    )  # fmt: skip
    query: StrictStr = Field(min_length=1, description="What the documents are ranked for.")
    documents: list[str] = Field(
        description="Strings, or objects with `text`; at least one.",
        json_schema_extra={"type": "array", "items": {"anyOf": [
            {"type": "string", "minLength": 1},
            {"type": "object", "properties": {"text": {"type": "string", "minLength": 1}},
             "required": ["text"]},
        ]}, "minItems": 1},
    )  # fmt: skip
    top_n: StrictInt | None = Field(
        default=None, ge=1, description="Return only the best N (default: all)."
    )
    return_documents: StrictBool = Field(
        default=False, description='Add each result\'s `document: {"text"}`.'
    )
    instruction: StrictStr | None = Field(
        default=None, description="embedgate extension: the task, for models that take one "
        "(Qwen3-Reranker's `<Instruct>`).",
    )  # fmt: skip

    @field_validator("documents", mode="plain")
    @classmethod
    def _check_documents(cls, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"'documents' must be an array; {DOCUMENT_SHAPES}")
        if not value:
            raise ValueError("'documents' must hold at least one document")
        return [document_text(item, index) for index, item in enumerate(value)]


class RerankDocument(BaseModel):
    text: str


class RerankResultObject(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResultObject]
    usage: RerankUsage
