"""The pgvector store's schema: tables, row-level security and grants (the per-dimension
HNSW indexes are pg_index's).

Everything lives in the schema ``embedgate_search``. The login of the store's URL owns it
and runs the DDL; data queries switch to a non-owner role (``embedgate_app`` by default)
that ``FORCE ROW LEVEL SECURITY`` and the policies below confine to one tenant's rows.
Setup is idempotent and runs under an advisory lock, so replicas may start at once.
"""

from __future__ import annotations

import logging
from typing import Any

from psycopg import AsyncConnection, errors, sql

from embedgate.docstore.pgvector import registry as pg_registry
from embedgate.docstore.pgvector.text import CJK_SQL

log = logging.getLogger(__name__)

SCHEMA = "embedgate_search"  # pg_queries spells it out in its statements
VERSION = 2  # 1: collections and documents; 2: the tenant registry (pg_registry)
SETUP_LOCK = 0x656D6267_00000001  # advisory lock keys: "embg" + a number
MIN_PGVECTOR = (0, 8)  # hnsw.iterative_scan

TENANT_MATCHES = "tenant_id = current_setting('embedgate.tenant', true)"

# Runs once per schema version, in the same transaction that records the version.
DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version integer NOT NULL);
CREATE TEXT SEARCH DICTIONARY {SCHEMA}.english_stem (TEMPLATE = snowball, Language = english);
CREATE TEXT SEARCH CONFIGURATION {SCHEMA}.fts (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION {SCHEMA}.fts ALTER MAPPING
    FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part WITH {SCHEMA}.english_stem;
CREATE AGGREGATE {SCHEMA}.tsquery_any(tsquery) (SFUNC = tsquery_or, STYPE = tsquery);
CREATE TABLE IF NOT EXISTS {SCHEMA}.collections (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text NOT NULL CHECK (tenant_id <> ''),
    name text COLLATE "C" NOT NULL,
    model text NOT NULL,
    dimensions integer NOT NULL CHECK (dimensions BETWEEN 1 AND 16000),
    metadata jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    document_count bigint NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, name),
    UNIQUE (id, tenant_id, dimensions)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.documents (
    collection_id bigint NOT NULL,
    id text COLLATE "C" NOT NULL,
    tenant_id text NOT NULL,
    dimensions integer NOT NULL,
    text text NOT NULL,
    text_hash text NOT NULL,
    metadata jsonb NOT NULL,
    embedding vector NOT NULL CHECK (vector_dims(embedding) = dimensions),
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('{SCHEMA}.fts'::regconfig,
        regexp_replace(text, '({CJK_SQL})', ' \\1 ', 'g'))) STORED,
    PRIMARY KEY (collection_id, id),
    FOREIGN KEY (collection_id, tenant_id, dimensions)
        REFERENCES {SCHEMA}.collections (id, tenant_id, dimensions) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS documents_tsv ON {SCHEMA}.documents USING gin (tsv);
ALTER TABLE {SCHEMA}.collections ENABLE ROW LEVEL SECURITY;
ALTER TABLE {SCHEMA}.collections FORCE ROW LEVEL SECURITY;
ALTER TABLE {SCHEMA}.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE {SCHEMA}.documents FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON {SCHEMA}.collections;
CREATE POLICY tenant_isolation ON {SCHEMA}.collections
    USING ({TENANT_MATCHES}) WITH CHECK ({TENANT_MATCHES});
DROP POLICY IF EXISTS tenant_isolation ON {SCHEMA}.documents;
CREATE POLICY tenant_isolation ON {SCHEMA}.documents
    USING ({TENANT_MATCHES}) WITH CHECK ({TENANT_MATCHES});
"""

MIGRATIONS = {1: DDL, 2: pg_registry.DDL}  # each runs once, in order

GRANTS = f"""
GRANT USAGE ON SCHEMA {SCHEMA} TO {{role}};
GRANT SELECT, INSERT, UPDATE, DELETE ON {SCHEMA}.collections, {SCHEMA}.documents TO {{role}};
{pg_registry.GRANTS}
"""

# Under row-level security PostgreSQL uses an index only through LEAKPROOF operators.
FACTS = """SELECT 'vector'::regtype::oid,
    (SELECT proleakproof FROM pg_proc WHERE oid = 'ts_match_vq(tsvector, tsquery)'::regprocedure)"""
NOT_LEAKPROOF = (
    "keyword search reads whole collections: ts_match_vq is not LEAKPROOF, so row-level "
    "security keeps the GIN index out of use (see docs/pgvector.md)"
)
GET_VERSION = "SELECT max(version) FROM embedgate_search.schema_version"
CLEAR_VERSION = "DELETE FROM embedgate_search.schema_version"
SET_VERSION = "INSERT INTO embedgate_search.schema_version VALUES (%s)"


class PgVectorUnavailable(RuntimeError):
    """The database has no usable pgvector extension."""


async def install(connection: AsyncConnection[Any], role: str) -> int:
    """Create or upgrade the schema; the ``vector`` type's oid. ``connection`` is in
    autocommit mode; everything happens in one transaction under an advisory lock."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", [SETUP_LOCK])
        await _ensure_extension(connection)
        await _ensure_role(connection, role)
        current = await _version(connection)
        if current < VERSION:
            for version in sorted(v for v in MIGRATIONS if v > current):
                await connection.execute(MIGRATIONS[version])
            await connection.execute(sql.SQL(GRANTS).format(role=sql.Identifier(role)))
            await connection.execute(CLEAR_VERSION)
            await connection.execute(SET_VERSION, [VERSION])
        row = await (await connection.execute(FACTS)).fetchone()
    assert row is not None
    if not row[1]:
        log.info(NOT_LEAKPROOF)
    return int(row[0])


async def _ensure_extension(connection: AsyncConnection[Any]) -> None:
    query = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
    row = await (await connection.execute(query)).fetchone()
    if row is None:
        try:
            async with connection.transaction():
                await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except (errors.UndefinedFile, errors.FeatureNotSupported) as exc:
            raise PgVectorUnavailable(
                "PostgreSQL has no pgvector extension: install pgvector (0.8 or newer) on "
                "the database server, see docs/pgvector.md"
            ) from exc
        except errors.InsufficientPrivilege as exc:
            raise PgVectorUnavailable(
                "Not allowed to create the pgvector extension: have a superuser run "
                "`CREATE EXTENSION vector;` in this database, see docs/pgvector.md"
            ) from exc
        row = await (await connection.execute(query)).fetchone()
        assert row is not None
    version = tuple(int(part) for part in str(row[0]).split(".")[:2])
    if version < MIN_PGVECTOR:
        raise PgVectorUnavailable(
            f"pgvector {row[0]} is too old: 0.8 or newer is needed "
            "(`ALTER EXTENSION vector UPDATE;` after upgrading the package)"
        )


async def _ensure_role(connection: AsyncConnection[Any], role: str) -> None:
    """The non-owner role exists and the login may ``SET ROLE`` to it."""
    exists = "SELECT 1 FROM pg_roles WHERE rolname = %s"
    if await (await connection.execute(exists, [role])).fetchone() is None:
        try:
            # Roles are cluster-wide: another database's setup may create it meanwhile.
            async with connection.transaction():
                await connection.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role))
                )
        except (errors.DuplicateObject, errors.UniqueViolation):
            pass
    member = "SELECT pg_has_role(current_user, %s, 'MEMBER')"
    row = await (await connection.execute(member, [role])).fetchone()
    if row is None or not row[0]:
        await connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))


async def _version(connection: AsyncConnection[Any]) -> int:
    table = await (
        await connection.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.schema_version"])
    ).fetchone()
    if table is None or table[0] is None:
        return 0
    row = await (await connection.execute(GET_VERSION)).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0
