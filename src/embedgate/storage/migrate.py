"""Bring a database to the newest schema with Alembic (idempotent; run at every start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Replicas starting together on a fresh PostgreSQL database would otherwise run the same
# migration at once and all but one fail on a duplicate key: the first takes this lock for
# its transaction, the others wait and then find the schema current.
MIGRATION_LOCK = 0x656D6267_00000000  # "embg" + 0 (search/pg_schema.py holds the others)


def upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    command.upgrade(config, "head")
