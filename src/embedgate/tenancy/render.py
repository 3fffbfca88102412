"""Tenants, keys and audit events as the admin API's JSON, for the API and the CLI alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from embedgate.storage.records import ApiKey, AuditEvent, Tenant
from embedgate.tenancy.keys import IssuedKey
from embedgate.tenancy.policy import Policy


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def tenant_json(tenant: Tenant, effective: Policy) -> dict[str, Any]:
    """``policy`` is the tenant's own overrides; ``effective_policy`` what is enforced."""
    return {
        "id": tenant.id, "object": "tenant", "name": tenant.name, "plan": tenant.plan,
        "status": tenant.status, "policy": tenant.policy,
        "effective_policy": effective.stored(),
        "created_at": _ts(tenant.created_at), "updated_at": _ts(tenant.updated_at),
    }  # fmt: skip


def key_json(key: ApiKey, issued: IssuedKey | None = None) -> dict[str, Any]:
    body = {
        "id": key.id, "object": "api_key", "name": key.name, "prefix": key.prefix,
        "scopes": list(key.scopes), "created_at": _ts(key.created_at),
        "expires_at": _ts(key.expires_at), "last_used_at": _ts(key.last_used_at),
        "revoked_at": _ts(key.revoked_at),
    }  # fmt: skip
    if issued is not None:
        body["key"] = issued.key  # shown once: at creation or rotation
    return body


def audit_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id, "object": "audit_event", "at": _ts(event.at), "event": event.event,
        "actor": event.actor, "tenant_id": event.tenant_id, "key_prefix": event.key_prefix,
        "client_ip": event.client_ip, "detail": event.detail,
    }  # fmt: skip
