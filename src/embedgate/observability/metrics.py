"""Prometheus series, one registry per app so that several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _QueueDepth(Collector):
    """Read at scrape time, so the gauge is never stale."""

    def __init__(self, depths: Callable[[], dict[str, int]]) -> None:
        self._depths = depths

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "embedgate_queue_depth", "Inputs waiting or in flight per model", labels=["model"]
        )
        for model, depth in self._depths().items():
            family.add_metric([model], depth)
        yield family


# model -> base URL -> its status (engine/endpoints.py EndpointPool.status)
UpstreamStatus = dict[str, dict[str, dict[str, Any]]]


class _Upstreams(Collector):
    """Per upstream base URL: health, window, what is in flight, latency, errors."""

    def __init__(self, status: Callable[[], UpstreamStatus]) -> None:
        self._status = status

    def collect(self) -> Iterable[Metric]:
        labels = ["model", "url"]
        gauges = {
            "healthy": GaugeMetricFamily("embedgate_upstream_healthy",
                                         "1 while the base URL is not ejected", labels=labels),
            "in_flight": GaugeMetricFamily("embedgate_upstream_in_flight",
                                           "Inputs in flight at the base URL", labels=labels),
            "window": GaugeMetricFamily("embedgate_upstream_window",
                                        "Inputs the base URL may have in flight now",
                                        labels=labels),
            "latency_ms": GaugeMetricFamily("embedgate_upstream_latency_seconds",
                                            "Moving average of seconds per upstream request",
                                            labels=labels),
        }  # fmt: skip
        errors = CounterMetricFamily("embedgate_upstream_errors",
                                     "Upstream attempts refused (429/503) or failed",
                                     labels=[*labels, "kind"])  # fmt: skip
        for model, urls in self._status().items():
            for url, entry in urls.items():
                for key, family in gauges.items():
                    value = entry.get(key)
                    if value is not None:
                        scale = 0.001 if key == "latency_ms" else 1
                        family.add_metric([model, url], float(value) * scale)
                for kind, count in entry.get("errors", {}).items():
                    errors.add_metric([model, url, kind], count)
        yield from gauges.values()
        yield errors


class CacheCounters(Protocol):
    """What the embedding cache (embeddings/cache.py) shows of itself."""

    @property
    def hits(self) -> int: ...

    @property
    def misses(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    def hit_ratio(self) -> float: ...


class _CacheStats(Collector):
    def __init__(self, cache: CacheCounters) -> None:
        self._cache = cache

    def collect(self) -> Iterable[Metric]:
        c = self._cache
        yield CounterMetricFamily(
            "embedgate_embedding_cache_hits", "Inputs answered from the embedding cache", c.hits
        )
        yield CounterMetricFamily(
            "embedgate_embedding_cache_misses", "Inputs the embedding cache did not hold", c.misses
        )
        yield GaugeMetricFamily(
            "embedgate_embedding_cache_hit_ratio", "Hits over lookups since start", c.hit_ratio()
        )
        yield GaugeMetricFamily("embedgate_embedding_cache_bytes", "Bytes cached", c.bytes)


OTHER_TENANTS = "_other"  # not a valid tenant id, so it never collides with one


class TenantLabels:
    """Bounded cardinality: the first ``limit`` tenants seen get their own label value, and
    keep it; every later tenant is counted under ``_other``. Busy tenants show up first."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._named: set[str] = set()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        if len(self._named) < self._limit:
            self._named.add(tenant)
            return tenant
        return OTHER_TENANTS


class Metrics:
    def __init__(self, tenant_labels: int = 20) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_label = TenantLabels(tenant_labels)
        r = self.registry
        self.requests = Counter(
            "embedgate_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.errors = Counter("embedgate_errors", "Error responses by code", ["code"], registry=r)
        self.latency = Histogram(
            "embedgate_request_duration_seconds", "Request latency", ["route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "embedgate_batch_size", "Inputs per model batch", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference = Histogram(
            "embedgate_inference_seconds", "Model time per batch", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter("embedgate_tokens", "Tokens embedded", ["model"], registry=r)
        self.inputs = Counter("embedgate_inputs", "Inputs embedded", ["model"], registry=r)
        self.tenant_requests = Counter(
            "embedgate_tenant_requests", "Requests per tenant", ["tenant", "status"], registry=r
        )
        self.tenant_tokens = Counter(
            "embedgate_tenant_tokens", "Tokens embedded per tenant", ["tenant"], registry=r
        )
        self.tenant_denials = Counter(
            "embedgate_tenant_denials", "Policy denials and limit hits per tenant",
            ["tenant", "code"], registry=r,
        )  # fmt: skip
        self.tenant_latency = Histogram(
            "embedgate_tenant_request_duration_seconds", "Request latency per tenant",
            ["tenant"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def record_tenant(
        self, tenant: str, status: int, elapsed: float, tokens: int, code: str | None
    ) -> None:
        label = self.tenant_label(tenant)
        self.tenant_requests.labels(label, str(status)).inc()
        self.tenant_latency.labels(label).observe(elapsed)
        if tokens:
            self.tenant_tokens.labels(label).inc(tokens)
        if status in (403, 429) and code:
            self.tenant_denials.labels(label, code).inc()

    def watch_cache(self, cache: CacheCounters) -> None:
        self.registry.register(_CacheStats(cache))

    def watch_queues(self, depths: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_QueueDepth(depths))

    def watch_upstreams(self, status: Callable[[], UpstreamStatus]) -> None:
        self.registry.register(_Upstreams(status))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
