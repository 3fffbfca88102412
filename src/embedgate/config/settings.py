"""One ``Settings`` object: defaults < YAML config file < ``EMBEDGATE_*`` env < CLI flags."""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from embedgate.config.models import DEFAULT_MODEL, ModelSpec, default_models
from embedgate.config.plans import Policy


class Settings(BaseSettings):
    """Every setting of embedgate. Each field's description is its documentation."""

    model_config = SettingsConfigDict(env_prefix="EMBEDGATE_", extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    data_dir: Path = Field(
        default=Path("embedgate-data"), description="Directory for state, keys and indexes."
    )
    config: Path | None = Field(
        default=None, description="YAML file with `models`, `plans` and any other setting."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )
    default_model: str = Field(
        default=DEFAULT_MODEL, description="Model used when a request names none."
    )
    device: str = Field(
        default="auto", description="Device for local models: auto (cuda if present), cpu, cuda."
    )
    allocator: Literal["auto", "jemalloc", "glibc", "system"] = Field(
        default="auto",
        description="C allocator of `embedgate serve`, which re-executes itself once to apply "
        "it (Linux with glibc): jemalloc (preloaded, when libjemalloc.so.2 is installed; "
        "memory flat at about glibc's speed), glibc (a fixed 64 KiB mmap threshold with huge "
        "pages; memory flat, slower), auto (jemalloc if found, else glibc; nothing when "
        "LD_PRELOAD, GLIBC_TUNABLES or MALLOC_CONF is already set), or system (glibc's "
        "defaults, whose heap grows under a long varied load).",
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for inference (default: torch's choice)."
    )
    max_batch_size: int = Field(
        default=64, ge=1, description="Most inputs in one model batch (1 disables batching)."
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most padded tokens in one model batch (default: 1024 on CPU, where "
        "bigger batches only add padding, 16384 on GPU).",
    )
    batch_wait_ms: float = Field(
        default=2.0, ge=0, description="How long an idle model waits for a batch to fill."
    )
    max_queue_inputs: int = Field(
        default=8192,
        ge=1,
        description="Inputs waiting per model before 503 `overloaded`; past it a tenant "
        "within its weighted share of the queue is still admitted (at most twice this).",
    )
    request_timeout: float = Field(
        default=60.0, gt=0, description="Seconds before a request gives up with 504."
    )
    max_inputs_per_request: int = Field(
        default=2048, ge=1, le=2048, description="Most inputs in one embeddings request."
    )
    max_rerank_documents: int = Field(
        default=1000, ge=1, le=10000, description="Most documents in one rerank request."
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest request body in bytes; larger bodies get 413.",
    )
    max_request_chars: int = Field(
        default=8 * 1024 * 1024,
        ge=1,
        description="Most characters of text in one embeddings request, all inputs together "
        "(400 `input_too_large`): bounds the tokenizing one request can ask for.",
    )
    max_request_token_ids: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Most token ids in one embeddings request, all inputs together "
        "(400 `input_too_large`): 2048 inputs of 512 tokens fit.",
    )
    client_header_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers, from the "
        "connection opening (or the end of the previous response); then 408 and close.",
    )
    client_body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request body may go without a byte arriving; then 408 and "
        "close (time the server spends not reading does not count).",
    )
    client_body_deadline: float = Field(
        default=300.0,
        gt=0,
        description="Most seconds a whole request body may take to arrive; then 408 and close.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Most client connections open at once; at it a new connection takes the "
        "place of the one waiting longest (over 1 s) for a request head, else gets 503 "
        "`too_many_connections` and is closed. Default: the open-file limit (raised to "
        "its hard limit at start) less 128 and 4 per search_open_tenants, at least a quarter "
        "of it, at most 8192.",
    )
    max_connections_per_client: int = Field(
        default=0,
        ge=0,
        description="Most connections open at once from one client address (the TCP peer, "
        "so a reverse proxy counts as one client); 0: no per-address bound.",
    )
    truncate_inputs: bool = Field(
        default=False, description="Truncate too-long inputs instead of answering 400."
    )
    warmup: bool = Field(default=True, description="Run one batch through each model at start.")
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL for tenants, keys and the audit log (default: SQLite "
        "in the data dir). Environment only: it may hold a password.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Server secret under which API keys are hashed (HMAC-SHA256). "
        "Environment only; default: generated into <data_dir>/secret.key.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="File holding the server secret; refused if group or others have access.",
    )
    trusted_proxy_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of an authenticating gateway (header "
        "X-Embedgate-Proxy-Secret); with it, X-Tenant-ID names the tenant. Environment only.",
    )
    trusted_proxy_networks: str = Field(
        default="",
        description="Comma-separated CIDRs the trusted gateway connects from, e.g. "
        "10.0.0.0/8. Both this and the secret are needed for proxy mode.",
    )
    forwarded_allow_ips: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are believed (the client address for audit, "
        "ip_allowlist and the trusted gateway check; https for the console's Secure cookie). "
        "Empty: those headers are ignored and the TCP peer is the client, so no local "
        "process can claim another address. e.g. 127.0.0.1 behind nginx on the same host.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="Admin key: environment only (never a flag, never the config file).",
    )
    admin_key_file: Path | None = Field(
        default=None,
        description="File holding the admin key; refused if group or others have any access.",
    )
    vector_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL (with pgvector) for collections and documents. Default: "
        "the database URL when that is PostgreSQL, else the embedded store in the data dir. "
        "Environment only: it may hold a password.",
    )
    vector_index_retry_s: float = Field(
        default=60.0,
        gt=0,
        description="pgvector store: after building a dimension count's HNSW index crashed "
        "the database server, seconds before it is tried again (doubled after each further "
        "crash, at most an hour); meanwhile such collections answer 503.",
    )
    search_memory_mb: float = Field(
        default=1024.0,
        gt=0,
        description="Embedded store: memory for loaded vector indexes, in MB; the least "
        "recently used tenants' indexes are unloaded beyond it.",
    )
    search_exact_threshold: int = Field(
        default=20_000,
        ge=0,
        description="Embedded store: collections up to this many documents are searched "
        "exactly; larger ones through an ANN index.",
    )
    search_open_tenants: int = Field(
        default=256,
        ge=1,
        description="Embedded store: most tenant databases open at once (file handles).",
    )
    search_tenant_concurrency: int = Field(
        default=4,
        ge=1,
        description="Document store calls of one tenant running at once, each holding a "
        "worker thread (embedded store, 40 shared) or a pool connection (pgvector, 10 "
        "shared); its further calls wait without holding one, so a flooding tenant cannot "
        "take the others' share.",
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (redis:// or rediss://) that replicas share rate limits, "
        "concurrency and quotas through (default: in this process's memory). Environment "
        "only: it may hold a password.",
    )
    redis_key_prefix: str = Field(
        default="embedgate:", description="Prefix of every Redis key embedgate writes."
    )
    rate_limit_failure_mode: Literal["open", "closed"] = Field(
        default="open",
        description="When Redis is unreachable: `open` admits requests without limits, "
        "`closed` refuses them with 503. Either way it is logged and shown in /health.",
    )
    scheduling: Literal["fair", "fifo"] = Field(
        default="fair",
        description="Batch order: `fair` is weighted fair queuing across tenants (weight: "
        "the plan's `priority`); `fifo` is first come, first served.",
    )
    embedding_cache_mb: float = Field(
        default=64.0,
        ge=0,
        description="Memory for the per-tenant LRU cache of embeddings, in MB (0 disables).",
    )
    usage_retention_days: int = Field(
        default=400, ge=1, description="Days usage records are kept before deletion."
    )
    metrics_tenant_labels: int = Field(
        default=20,
        ge=0,
        description="Tenants with their own label on per-tenant metrics; the rest are "
        "counted as `_other`.",
    )
    auth_failures_per_minute: int = Field(
        default=10,
        ge=0,
        description="Failed key attempts (tenant key, admin key, console login) one client "
        "address may make per minute; past it, 429 `rate_limit_exceeded` before any key is "
        "checked. 0: no throttle.",
    )
    console_session_ttl: int = Field(
        default=8 * 3600,
        ge=1,
        le=30 * 86400,
        description="Seconds a web console login lasts before the key must be entered again.",
    )
    console_secure_cookie: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="`Secure` flag of the console session cookie: `auto` sets it on https "
        "requests, `always` also behind a TLS-terminating proxy that forwards plain http.",
    )
    models: dict[str, ModelSpec] = Field(
        default_factory=default_models,
        description="Model registry (config file, or JSON in the environment variable).",
    )
    plans: dict[str, Policy] = Field(
        default_factory=dict,
        description="Plan policy defaults (config file, or JSON in the environment variable).",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        names = [name for model, spec in self.models.items() for name in (model, *spec.aliases)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model names or aliases used twice: {', '.join(duplicates)}")
        if self.default_model not in names:
            raise ValueError(f"default_model {self.default_model!r} is not in `models`")
        default = next(spec for model, spec in self.models.items()
                       if self.default_model in (model, *spec.aliases))  # fmt: skip
        if default.task != "embed":
            raise ValueError(f"default_model {self.default_model!r} is a rerank model")
        try:
            self.proxy_networks()
        except ValueError as exc:
            raise ValueError(f"trusted_proxy_networks: {exc}") from None
        if self.max_queue_inputs < self.max_inputs_per_request:
            raise ValueError(
                "max_queue_inputs must be at least max_inputs_per_request, or the largest "
                "requests could never be queued"
            )
        return self

    def proxy_networks(self) -> list[IPv4Network | IPv6Network]:
        parts = [part.strip() for part in self.trusted_proxy_networks.split(",")]
        return [ip_network(part, strict=False) for part in parts if part]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = _config_path(init_settings)
        if config_path is not None:
            if not config_path.is_file():
                raise ValueError(f"config file not found: {config_path}")
            sources.append(_ConfigFile(settings_cls, yaml_file=config_path))
        return tuple(sources)


class _ConfigFile(YamlConfigSettingsSource):
    """The YAML file; config files get copied and shared, so no secret may live there."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        for secret in SECRETS:
            if secret in values:
                name = f"EMBEDGATE_{secret.upper()}"
                raise ValueError(
                    f"{secret} cannot be set in the config file; use the environment ({name})"
                )
        return values


def _config_path(init_settings: PydanticBaseSettingsSource) -> Path | None:
    """The config file comes from the CLI (init kwargs) or ``EMBEDGATE_CONFIG``."""
    explicit = init_settings().get("config")
    value = explicit if explicit is not None else os.environ.get("EMBEDGATE_CONFIG")
    return Path(value) if value else None


# Settings that may hold a password or key: environment only (never a flag, never the
# config file, which gets copied and shared).
SECRETS = ("admin_key", "secret_key", "database_url", "trusted_proxy_secret", "redis_url",
           "vector_url")  # fmt: skip
# Fields that only the config file or the environment may set: structured, or secret.
NOT_ON_COMMAND_LINE = frozenset({"models", "plans", *SECRETS})
