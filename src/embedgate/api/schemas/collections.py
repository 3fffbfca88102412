"""/v1/collections: the bodies of collection, document and search requests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from embedgate.search.service import MAX_TOP_K, NAME

MAX_DOCUMENTS = 2048
Scalar = StrictStr | StrictInt | StrictFloat | bool | None


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(json_schema_extra={"pattern": f"^{NAME.pattern}$"})
    model: StrictStr | None = None
    dimensions: StrictInt | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = None
    text: StrictStr = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS)


class RerankOptions(BaseModel):
    """A search's rerank stage: retrieve ``candidates`` by the mode, rerank them, keep
    ``top_k`` (docs/search.md#two-stage-search)."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr | None = Field(
        default=None, min_length=1, description="Rerank model name or alias; the first "
        "rerank model the tenant may use when omitted.",
    )  # fmt: skip
    candidates: StrictInt | None = Field(
        default=None, ge=1, description="How many results the mode retrieves for the "
        "reranker: at least `top_k`, at most the rerank document limits (default 4 x top_k).",
    )  # fmt: skip


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StrictStr = Field(min_length=1)
    top_k: StrictInt = Field(default=5, ge=1, le=MAX_TOP_K)
    filter: dict[str, Scalar | dict[Literal["$in"], list[Scalar]]] | None = None
    min_score: StrictFloat | None = None  # integers too, but never strings or booleans
    mode: Literal["vector", "keyword", "hybrid"] = "vector"
    instruction: StrictStr | None = None
    rerank: RerankOptions | None = None

    @field_validator("filter")
    @classmethod
    def _in_is_not_empty(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, condition in (value or {}).items():
            if isinstance(condition, dict) and not condition.get("$in"):
                raise ValueError(f"filter.{key}: `$in` needs a non-empty list")
        return value
