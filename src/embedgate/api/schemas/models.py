"""/v1/models: OpenAI's list and model shapes, plus embedding facts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedgate"
    dimensions: int
    max_tokens: int
    aliases: list[str]
    instructions: bool
    task: Literal["embed", "rerank"] = "embed"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
