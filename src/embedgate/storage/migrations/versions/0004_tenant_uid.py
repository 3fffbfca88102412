"""Tenant uids: an internal id per tenant incarnation, on tenants, keys and usage.

Rows from before get ``uid = id`` (legacy): the document store's directories and rows are
keyed by what the server passes them, the id until now, so they keep working unmoved.
Columns are added nullable and filled: SQLite cannot add a NOT NULL column in place, and
rebuilding ``tenants`` would cascade-delete every key (foreign keys are on).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("uid", sa.String(63)))
    op.execute("UPDATE tenants SET uid = id")
    op.create_index("ix_tenants_uid", "tenants", ["uid"], unique=True)
    op.add_column("api_keys", sa.Column("tenant_uid", sa.String(63)))
    op.execute("UPDATE api_keys SET tenant_uid = tenant_id")
    op.add_column("usage_records", sa.Column("tenant_uid", sa.String(63)))
    op.execute("UPDATE usage_records SET tenant_uid = tenant_id")
    op.create_index("ix_usage_uid_at", "usage_records", ["tenant_uid", "at"])


def downgrade() -> None:
    op.drop_index("ix_usage_uid_at", "usage_records")
    op.drop_column("usage_records", "tenant_uid")
    op.drop_column("api_keys", "tenant_uid")
    op.drop_index("ix_tenants_uid", "tenants")
    op.drop_column("tenants", "uid")
