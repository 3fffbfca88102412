"""Usage records: one row per metered request, counts only.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from embedgate.storage.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(63), nullable=False),
        sa.Column("key_id", sa.String(40)),
        sa.Column("model", sa.String(200)),
        sa.Column("route", sa.String(100), nullable=False),
        sa.Column("inputs", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("dimensions", sa.Integer),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("epoch_hour", sa.Integer, nullable=False),
    )
    op.create_index("ix_usage_tenant_at", "usage_records", ["tenant_id", "at"])
    op.create_index("ix_usage_at", "usage_records", ["at"])


def downgrade() -> None:
    op.drop_table("usage_records")
