"""POST /v1/embeddings: OpenAI's request and response shapes, plus `instruction`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

MAX_INPUTS = 2048
INPUT_SHAPES = (
    "'input' must be a non-empty string, an array of non-empty strings, an array of token "
    "ids, or an array of non-empty token-id arrays"
)

TextOrTokens = list[str] | list[list[int]]
_TEXT = {"type": "string", "minLength": 1}
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
INPUT_SCHEMAS: list[Any] = [
    _TEXT,
    {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": MAX_INPUTS},
    _TOKENS,
    {"type": "array", "items": _TOKENS, "minItems": 1, "maxItems": MAX_INPUTS},
]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(v) for v in value)


def parse_input(value: Any) -> TextOrTokens:
    """Normalise OpenAI's four input shapes to a list of texts or a list of token lists."""
    if isinstance(value, str) or _token_list(value):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(INPUT_SHAPES)
    if len(value) > MAX_INPUTS:
        raise ValueError(f"too many inputs: {len(value)}; at most {MAX_INPUTS} per request")
    if all(isinstance(v, str) for v in value):
        empty = next((i for i, v in enumerate(value) if not v), None)
        if empty is not None:
            raise ValueError(f"input[{empty}] is an empty string")
        return value
    if all(_token_list(v) for v in value):
        return value
    raise ValueError(INPUT_SHAPES)


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: TextOrTokens = Field(
        description="A string, an array of strings, an array of token ids, or an array of "
        f"token-id arrays (at most {MAX_INPUTS} inputs).",
        json_schema_extra={"anyOf": INPUT_SCHEMAS},  # the plain validator hides them
    )
    model: StrictStr | None = Field(
        default=None, description="Model name or alias; the server default when omitted."
    )
    dimensions: StrictInt | None = Field(
        default=None, description="Return the first N dimensions, re-normalised."
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="`base64`: little-endian float32 bytes, base64-encoded."
    )
    user: StrictStr | None = Field(default=None, description="Accepted for compatibility.")
    instruction: StrictStr | None = Field(
        default=None,
        description="embedgate extension: embed the inputs as queries for this task "
        "(Qwen3 `Instruct: {task}\\nQuery:{text}`).",
    )

    @field_validator("input", mode="plain")
    @classmethod
    def _check_input(cls, value: Any) -> TextOrTokens:
        return parse_input(value)


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage
