"""A tenant's ``Policy``: the fields of a plan and of a tenant's own overrides."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, IPvAnyNetwork


def _cidr_text(value: Any) -> Any:
    """pydantic would read an integer, even ``true``, as an address: a CIDR must be text."""
    if not isinstance(value, str | IPv4Network | IPv6Network):
        raise ValueError("expected a CIDR string, such as 10.0.0.0/8")
    return value


Cidr = Annotated[IPvAnyNetwork, BeforeValidator(_cidr_text)]


class Policy(BaseModel):
    """A tenant's limits (DESIGN.md). Every field optional: unset means the plan's default,
    and unset there means no limit."""

    model_config = ConfigDict(extra="forbid")

    allowed_models: list[str] | None = None
    max_dimensions: int | None = Field(default=None, ge=1)
    allow_instructions: bool | None = None
    instruction_allowlist: list[str] | None = None
    blocked_terms: list[str] | None = None
    max_inputs_per_request: int | None = Field(default=None, ge=1)
    max_tokens_per_input: int | None = Field(default=None, ge=1)
    max_documents_per_rerank: int | None = Field(default=None, ge=1)
    rpm: int | None = Field(default=None, ge=0)
    tpm: int | None = Field(default=None, ge=0)
    key_rpm: int | None = Field(default=None, ge=0)  # each of the tenant's keys, on its own
    key_tpm: int | None = Field(default=None, ge=0)
    monthly_token_quota: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    ip_allowlist: list[Cidr] | None = None
    priority: float | None = Field(default=None, gt=0)
    # storage caps of collections (docs/policy.md#storage-caps)
    max_collections: int | None = Field(default=None, ge=0)
    max_documents: int | None = Field(default=None, ge=0)  # all collections together
    max_metadata_bytes: int | None = Field(default=None, ge=0)  # per document, as JSON
    max_collection_metadata_bytes: int | None = Field(default=None, ge=0)
    max_stored_bytes: int | None = Field(default=None, ge=0)  # texts + metadata + vectors

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
