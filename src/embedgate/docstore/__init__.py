"""Per-tenant document stores: the interface (``base``), the embedded store (``local/``) and
PostgreSQL + pgvector (``pgvector/``); ``stores`` opens the one a server is configured for."""
