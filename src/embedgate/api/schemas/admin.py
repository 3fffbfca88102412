"""/admin: the bodies that create and change tenants and their keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from embedgate.tenancy.keys import SCOPES, Scope
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.tenants import TENANT_ID


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(json_schema_extra={"pattern": f"^{TENANT_ID.pattern}$"})
    name: str | None = Field(default=None, max_length=200)
    plan: str | None = Field(default=None, max_length=63)
    policy: Policy = Field(default_factory=Policy)


class TenantPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=200)
    plan: str | None = Field(default=None, max_length=63)
    status: Literal["active", "suspended"] | None = None
    policy: Policy | None = None


MAX_KEY_LIFETIME = 100 * 366 * 86400  # 100 years; far larger values overflow dates (500)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    expires_in: int | None = Field(
        default=None, ge=1, le=MAX_KEY_LIFETIME, description="Seconds until it expires."
    )
    scopes: list[Scope] = Field(default_factory=lambda: list(SCOPES), min_length=1)


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_period: int = Field(default=0, ge=0, le=30 * 86400, description="Seconds.")
