"""The document store on PostgreSQL + pgvector, for replicas that share one database."""
