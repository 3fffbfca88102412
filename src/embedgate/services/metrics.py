"""Prometheus series, one registry per app so that several apps can live in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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

    def watch_queues(self, depths: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_QueueDepth(depths))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
