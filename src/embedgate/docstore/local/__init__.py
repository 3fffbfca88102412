"""The embedded document store: one directory per tenant, SQLite + FTS5 + HNSW files."""
