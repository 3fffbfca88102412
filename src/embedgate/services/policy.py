"""Tenant policy fields (DESIGN.md). Stored and returned now; enforced by the policy engine."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork


class Policy(BaseModel):
    """Every field optional: unset means the plan's default."""

    model_config = ConfigDict(extra="forbid")

    allowed_models: list[str] | None = None
    max_dimensions: int | None = Field(default=None, ge=1)
    allow_instructions: bool | None = None
    instruction_allowlist: list[str] | None = None
    blocked_terms: list[str] | None = None
    max_inputs_per_request: int | None = Field(default=None, ge=1)
    max_tokens_per_input: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    monthly_token_quota: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    ip_allowlist: list[IPvAnyNetwork] | None = None
    priority: float | None = Field(default=None, gt=0)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
