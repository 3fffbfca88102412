"""The tenant backup file: JSON Lines, gzip-compressed when its name ends in ``.gz``.

    line 1     {"format": "embedgate-tenant", "version": 2, "exported_at", "key_check",
                "usage": {"start", "end"} | null, "tenant": {id, name, plan, status, ...}}
    then       {"type": "key", ...}          one per API key: its HMAC digest, never a secret
               {"type": "collection", ...}   each followed by its {"type": "document", ...}
               {"type": "usage", ...}        one per usage record in the "usage" window
    last line  {"type": "end", "keys", "collections", "documents", "usage", "signature"}

Vectors are base64 of float32 little-endian. The trailer counts the lines and signs every
byte before it: HMAC-SHA256 under a key derived from the server secret. A checksum anyone
can recompute would let an edited file import (a key line copied in from another tenant's
file, a suspended tenant made active); a signature only the server's secret can make does
not. A truncated, altered or unsigned file is refused before anything is written. Version 1
files carry a plain SHA-256 (``sha256``) instead: they are read only as untrusted.
Every line is checked by the models below, on export as on import.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Final, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from embedgate.docstore.base import Vector
from embedgate.search.service import NAME, check_id
from embedgate.tenancy.keys import Scope
from embedgate.tenancy.policy import Policy
from embedgate.tenancy.tenants import TENANT_ID

FORMAT: Final = "embedgate-tenant"
VERSION: Final = 2
SIGNING_LABEL: Final = "embedgate backup v2: signing key"  # see backup_io.signing_key
HEX64 = r"^[0-9a-f]{64}$"
KINDS = ("keys", "collections", "documents", "usage")


class BackupError(ValueError):
    """The file cannot be restored; the message names the line."""


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantRecord(_Line):
    id: str = Field(pattern=f"^{TENANT_ID.pattern}$")
    name: str = Field(max_length=200)
    plan: str = Field(min_length=1, max_length=63)
    status: Literal["active", "suspended"]
    policy: dict[str, Any]
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @field_validator("policy")
    @classmethod
    def _policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        return Policy.model_validate(value).stored()


class UsageWindow(_Line):
    start: AwareDatetime
    end: AwareDatetime


class Header(_Line):
    format: Literal["embedgate-tenant"]
    version: Literal[1, 2]  # 1: unsigned, read only as untrusted
    exported_at: AwareDatetime
    key_check: str = Field(pattern="^[0-9a-f]{16}$")  # see backup.key_check
    usage: UsageWindow | None
    tenant: TenantRecord


class KeyLine(_Line):
    type: Literal["key"] = "key"
    id: str = Field(min_length=1, max_length=40)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=100)
    digest: str = Field(pattern=HEX64)
    scopes: list[Scope] = Field(min_length=1)
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    last_used_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None


class CollectionLine(_Line):
    type: Literal["collection"] = "collection"
    name: str = Field(pattern=f"^{NAME.pattern}$")
    model: str = Field(min_length=1, max_length=200)
    dimensions: int = Field(ge=1, le=16_000)
    metadata: dict[str, Any]
    created_at: AwareDatetime


class DocumentLine(_Line):
    type: Literal["document"] = "document"
    collection: str
    id: str
    text: str
    metadata: dict[str, Any]
    text_hash: str = Field(pattern=HEX64)
    vector: str  # base64, float32 little-endian

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        try:
            return check_id(value)
        except Exception:
            raise ValueError("1 to 256 characters, no control characters") from None


class UsageLine(_Line):
    type: Literal["usage"] = "usage"
    key_id: str | None = Field(max_length=40)
    model: str | None = Field(max_length=200)
    route: str = Field(max_length=100)
    inputs: int = Field(ge=0)
    tokens: int = Field(ge=0)
    dimensions: int | None
    status: int = Field(ge=100, le=599)
    latency_ms: float = Field(ge=0)
    at: AwareDatetime


class EndLine(_Line):
    type: Literal["end"] = "end"
    keys: int = Field(ge=0)
    collections: int = Field(ge=0)
    documents: int = Field(ge=0)
    usage: int = Field(ge=0)
    signature: str | None = Field(default=None, pattern=HEX64)  # version 2
    sha256: str | None = Field(default=None, pattern=HEX64)  # version 1


Line = KeyLine | CollectionLine | DocumentLine | UsageLine | EndLine
LINE: TypeAdapter[Line] = TypeAdapter(Annotated[Line, Field(discriminator="type")])
HEADER: TypeAdapter[Header] = TypeAdapter(Header)


def encode_vector(vector: Vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dimensions: int) -> Vector:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("vector: not base64") from None
    if len(raw) != 4 * dimensions:
        raise ValueError(f"vector: {len(raw) // 4} dimensions, the collection has {dimensions}")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ValueError("vector: not finite")
    return vector


def dump(line: BaseModel) -> bytes:
    # The trailer carries the field of its version only; other lines keep their nulls.
    text = line.model_dump_json(exclude_none=isinstance(line, EndLine))
    return text.encode("utf-8") + b"\n"
