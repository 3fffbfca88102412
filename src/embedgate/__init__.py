"""embedgate: many tenants, one embedding model, an OpenAI-compatible API."""

__version__ = "0.1.0"
