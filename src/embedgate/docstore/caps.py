"""A tenant's storage caps (plan fields, docs/policy.md#storage-caps).

Two checks: here, before any embedding work, against the tenant's usage as the store
counts it (a request that is over at once costs nothing); and in the store, inside the
write's own transaction, serialized per tenant, after the rows are written (exact, also
for replaced documents and concurrent requests). A write over a cap is rolled back whole.
Sizes are counted as ``base.Usage`` says: UTF-8 bytes of text and compact JSON metadata,
4 bytes per dimension.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from embedgate.config.plans import Policy
from embedgate.docstore.base import (
    Document,
    DocumentStore,
    LimitExceeded,
    Limits,
    Usage,
    capping,
)
from embedgate.errors import EmbedgateError

_CODES = {"collections": "collection_limit_exceeded", "documents": "document_limit_exceeded",
          "stored_bytes": "storage_limit_exceeded"}  # fmt: skip
_FIELDS = {"collections": "max_collections", "documents": "max_documents",
           "stored_bytes": "max_stored_bytes"}  # fmt: skip
_UNITS = {"collections": "collections", "documents": "documents",
          "stored_bytes": "stored bytes"}  # fmt: skip


def limits(policy: Policy) -> Limits | None:
    """The store-side caps of ``policy``, or None when it has none."""
    return capping(Limits(policy.max_collections, policy.max_documents,
                          policy.max_stored_bytes))  # fmt: skip


def metadata_bytes(metadata: Mapping[str, Any]) -> int:
    text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return len(text.encode("utf-8"))


def document_bytes(document: Document, dimensions: int) -> int:
    return len(document.text.encode("utf-8")) + metadata_bytes(document.metadata) + 4 * dimensions


def check_collection_metadata(policy: Policy, metadata: Mapping[str, Any]) -> None:
    cap = policy.max_collection_metadata_bytes
    size = metadata_bytes(metadata)
    if cap is not None and size > cap:
        raise _too_large(cap, size, "max_collection_metadata_bytes", "metadata")


def check_document_metadata(policy: Policy, documents: Sequence[Document]) -> None:
    cap = policy.max_metadata_bytes
    for index, document in enumerate(documents):
        size = metadata_bytes(document.metadata) if cap is not None else 0
        if cap is not None and size > cap:
            raise _too_large(cap, size, "max_metadata_bytes", f"documents[{index}].metadata")


async def precheck_collection(store: DocumentStore, tenant: str, caps: Limits | None,
                              metadata: Mapping[str, Any]) -> None:  # fmt: skip
    """Refuses a new collection that would cross a cap (the store checks again)."""
    if caps is None:
        return
    now = await store.tenant_usage(tenant)
    after = Usage(now.collections + 1, now.documents, now.stored_bytes + metadata_bytes(metadata))
    _refuse_over(caps, now, after)


async def precheck_upsert(
    store: DocumentStore, tenant: str, caps: Limits | None, documents: Sequence[Document],
    existing: Mapping[str, str], dimensions: int,
) -> None:  # fmt: skip
    """Refuses a batch whose new documents alone cross a cap, before it is embedded
    (replaced documents are left to the store's exact check: their old size is not known)."""
    if caps is None or (caps.documents is None and caps.stored_bytes is None):
        return
    new = [doc for doc in documents if doc.id not in existing]
    now = await store.tenant_usage(tenant)
    added = sum(document_bytes(doc, dimensions) for doc in new)
    _refuse_over(caps, now, Usage(now.collections, now.documents + len(new),
                                  now.stored_bytes + added))  # fmt: skip


async def refused(store: DocumentStore, tenant: str, exc: LimitExceeded) -> EmbedgateError:
    """The error for a write the store rolled back, with the tenant's usage as it is."""
    return exceeded(exc.field, exc.limit, await store.tenant_usage(tenant), exc.usage)


def exceeded(field: str, cap: int, now: Usage, after: Usage) -> EmbedgateError:
    unit, setting = _UNITS[field], _FIELDS[field]
    message = (f"Your plan allows at most {cap} {unit} (`{setting}`); the tenant has "
               f"{getattr(now, field)}, and this request would make it {getattr(after, field)}. "
               "Nothing of it was written.")  # fmt: skip
    return EmbedgateError(403, message, code=_CODES[field], param=None)


def _refuse_over(caps: Limits, now: Usage, after: Usage) -> None:
    field = caps.crossed(after)
    if field is not None:
        raise exceeded(field, getattr(caps, field), now, after)


def _too_large(cap: int, size: int, setting: str, param: str) -> EmbedgateError:
    return EmbedgateError(403, f"Metadata of {size} bytes (as JSON) is over your plan's "
                          f"`{setting}` of {cap} bytes.", code="metadata_too_large",
                          param=param)  # fmt: skip


def usage_json(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"collections": usage.collections, "documents": usage.documents,
            "stored_bytes": usage.stored_bytes}  # fmt: skip
